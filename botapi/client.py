"""Outbound Bot API calls with the retrying telebot lacks: honour 429 retry_after, retry 5xx
and transport errors a bounded number of times, and report 403 (the user blocked the bot).

A send whose request may have reached Telegram without an answer coming back (a read
timeout, a connection dropped mid-call) has an unknown outcome: retrying it at once
could deliver the message twice or three times. Such a call is not retried here; it
fails as `unknown`, and only the notification queue tries it again, after a pause.
"""
import logging
import time

import requests
from telebot import apihelper

log = logging.getLogger(__name__)

ATTEMPTS = 3
MAX_RETRY_AFTER_S = 10.0   # a longer flood wait is left to the caller (queue) instead of blocking
BACKOFF_S = (0.5, 1.5)
CONNECT_TIMEOUT_S = 3
READ_TIMEOUT_S = 10


class SendFailed(Exception):
    """The call did not go through after its retries; `permanent` when retrying cannot help,
    `unknown` when the request may have been carried out (no answer came)."""

    def __init__(self, message: str, permanent: bool = False, blocked: bool = False, unknown: bool = False,
                 retry_after: float | None = None):
        super().__init__(message)
        self.permanent = permanent
        self.blocked = blocked
        self.unknown = unknown
        self.retry_after = retry_after  # Telegram asked to wait this long (429)


def configure(api_url: str, read_timeout_s: float = READ_TIMEOUT_S) -> None:
    """Point telebot at `api_url` with short timeouts (telebot's settings are process-wide)."""
    apihelper.API_URL = api_url.rstrip("/") + "/bot{0}/{1}"
    apihelper.CONNECT_TIMEOUT = CONNECT_TIMEOUT_S
    apihelper.READ_TIMEOUT = read_timeout_s


def reached_telegram(exc: requests.RequestException) -> bool:
    """False only when the request certainly never left: the connection was never made."""
    if isinstance(exc, requests.ConnectTimeout):
        return False
    if isinstance(exc, requests.ConnectionError):
        reason = repr(exc.args[0]) if exc.args else ""
        return not any(hint in reason for hint in ("NewConnectionError", "Connection refused", "NameResolution"))
    return True


def retry_after_s(exc: Exception) -> float | None:
    """The retry_after a 429 answer carries, if any."""
    if isinstance(exc, apihelper.ApiTelegramException) and exc.error_code == 429:
        parameters = (exc.result_json or {}).get("parameters") or {}
        return float(parameters.get("retry_after", 1))
    return None


def call(function, *args, idempotent: bool = True, wait_on_429: bool = True, **kwargs):
    """Run a telebot call, retrying what a retry can fix; raise SendFailed otherwise.

    idempotent=False (a sendMessage): a transport failure after the request may have
    reached Telegram is not retried, so one timed-out send yields at most one duplicate.
    wait_on_429=False: a 429 is raised at once with its retry_after, for a caller that
    paces its own sends (the worker's delivery) instead of sleeping here.
    """
    for attempt in range(ATTEMPTS):
        last = attempt == ATTEMPTS - 1
        try:
            return function(*args, **kwargs)
        except apihelper.ApiTelegramException as exc:
            wait = retry_after_s(exc)
            if exc.error_code == 403:
                raise SendFailed(exc.description, permanent=True, blocked=True) from exc
            if wait is not None and not wait_on_429:
                raise SendFailed(f"429 {exc.description}", retry_after=wait) from exc
            if wait is not None and wait <= MAX_RETRY_AFTER_S and not last:
                time.sleep(wait)
                continue
            if exc.error_code >= 500 and not last:
                time.sleep(BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)])
                continue
            raise SendFailed(f"{exc.error_code} {exc.description}", permanent=exc.error_code < 500 and wait is None,
                             retry_after=wait) from exc
        except (apihelper.ApiHTTPException, apihelper.ApiInvalidJSONException, requests.RequestException) as exc:
            if not idempotent and isinstance(exc, requests.RequestException) and reached_telegram(exc):
                raise SendFailed(f"{type(exc).__name__}: outcome unknown", unknown=True) from exc
            if last:
                raise SendFailed(type(exc).__name__) from exc
            time.sleep(BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)])
    raise AssertionError("unreachable")
