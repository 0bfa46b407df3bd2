"""Sending at Telegram's pace: a global rate, one message per chat per interval, and 429's retry_after.

Telegram allows about 30 messages a second overall and one a second per chat; the
worker keeps to TELEGRAM_MAX_MSG_PER_S (below 30, leaving room for the bot's direct
replies). A 429 pushes that chat's next slot back by its retry_after; 429s for two
chats within a second mean the flood limit is global, and every chat waits.
"""
import threading
import time

CHAT_INTERVAL_S = 1.0
GLOBAL_429_WINDOW_S = 1.0


class Pacer:
    def __init__(self, per_second: float, chat_interval_s: float = CHAT_INTERVAL_S, clock=time.monotonic):
        self._interval = 1.0 / per_second
        self._chat_interval = chat_interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._next_global = 0.0
        self._next_chat: dict[int, float] = {}
        self._last_429: tuple[float, int] | None = None

    def reserve(self, chat_id: int, max_wait_s: float = CHAT_INTERVAL_S) -> float | None:
        """Book the next slot for this chat: seconds to wait before sending, or None (nothing booked) when the
        chat must wait longer than max_wait_s (send to other chats meanwhile)."""
        with self._lock:
            now = self._clock()
            chat_ready = self._next_chat.get(chat_id, 0.0)
            if chat_ready - now > max_wait_s:
                return None
            start = max(now, self._next_global, chat_ready)
            self._next_global = start + self._interval
            self._next_chat[chat_id] = start + self._chat_interval
            self._forget_idle_chats(now)
            return start - now

    def penalize(self, chat_id: int, retry_after_s: float) -> None:
        """Telegram answered 429 for this chat: nothing to it before retry_after (everyone, if it is global)."""
        with self._lock:
            now = self._clock()
            until = now + retry_after_s
            self._next_chat[chat_id] = max(self._next_chat.get(chat_id, 0.0), until)
            if self._last_429 and self._last_429[1] != chat_id and now - self._last_429[0] < GLOBAL_429_WINDOW_S:
                self._next_global = max(self._next_global, until)
            self._last_429 = (now, chat_id)

    def _forget_idle_chats(self, now: float) -> None:
        """Memory stays bounded by the chats of the last few seconds."""
        if len(self._next_chat) > 10_000:
            self._next_chat = {chat: ready for chat, ready in self._next_chat.items() if ready > now}
