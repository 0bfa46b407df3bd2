"""The background worker: python worker.py (systemd unit `worker`).

A `schedule` loop over a table of jobs: deposit monitoring, withdrawal sending and
reconciling, network recovery, notification delivery, request expiry and a status
report. Each job is guarded (an error is logged, the loop goes on); chain jobs
pause in blockchain maintenance mode, and the RPC circuit breaker makes them fail
fast while the node is down. SIGTERM finishes the current job, then exits.
"""
import logging
import signal
import sys
import threading

import schedule

import dr
from botapi import delivery
from chain import reconciler, scanner, sender
from chain.rpc import is_transport_failure
from core.errors import BreakerOpen
from db import notifications, service_status
from runtime import startup
from runtime.worker_context import WorkerContext, build_worker_context

log = logging.getLogger("worker")

LOOP_SLEEP_S = 0.1
EXPIRY_INTERVAL_S = 60
STATUS_INTERVAL_S = 1
WARMUP_INTERVAL_S = 60


def guarded(name: str, job, wctx: WorkerContext, uses_chain: bool):
    """Run `job` so that no exception stops the loop; chain jobs sit out maintenance mode."""
    def run():
        if uses_chain and wctx.settings.blockchain_maintenance_mode:
            return
        try:
            job()
        except BreakerOpen as exc:
            log.debug("%s skipped: %s", name, exc)
        except Exception as exc:
            if is_transport_failure(exc):
                log.warning("%s: RPC unavailable (%s)", name, type(exc).__name__)
            else:
                log.exception("job %s failed", name)
    return run


def report_status(wctx: WorkerContext, deposit_monitor, withdrawal_sender) -> None:
    """Tell the bot and operators how the chain side is doing; refresh the heartbeat file."""
    breaker = wctx.chain.breaker
    status = {"breaker": breaker.state, "last_error": breaker.last_error,
              "maintenance": wctx.settings.blockchain_maintenance_mode,
              "scan_problem": deposit_monitor.problem, "funds_problem": withdrawal_sender.funds_problem,
              "scanned_block": deposit_monitor.scanned_to, "finalized_block": deposit_monitor.finalized}
    breakers = [breaker, wctx.pg_breaker, wctx.redis_breaker]
    dr.write_status_file(wctx.settings.state_dir, "worker", breakers, status)  # first: also with PostgreSQL down
    with wctx.transaction() as conn:
        service_status.put(conn, "rpc", status)
        status["notifications_pending"] = notifications.pending_count(conn)
    dr.write_status_file(wctx.settings.state_dir, "worker", breakers, status)


def schedule_jobs(scheduler: schedule.Scheduler, wctx: WorkerContext, cache) -> None:
    """The job table."""
    deposit_monitor = scanner.DepositMonitor(wctx)
    withdrawal_sender = sender.WithdrawalSender(wctx)
    every = wctx.settings.worker_interval_s
    table = [
        ("scan_deposits", every, deposit_monitor.scan, True),
        ("network_recovery", every, lambda: scanner.finish_network_recovery(wctx, deposit_monitor), True),
        ("send_withdrawals", every, withdrawal_sender.run, True),
        ("reconcile_withdrawals", every, lambda: reconciler.reconcile(wctx), True),
        ("deliver_notifications", every, lambda: delivery.deliver(wctx, stopping=wctx.stopping), False),
        ("expire_deposit_requests", EXPIRY_INTERVAL_S, lambda: scanner.expire_requests(wctx), False),
        ("report_status", STATUS_INTERVAL_S, lambda: report_status(wctx, deposit_monitor, withdrawal_sender), False),
        ("warmup_cache", WARMUP_INTERVAL_S, lambda: dr.warmup(cache, wctx.transaction), False),
    ]
    for name, seconds, job, uses_chain in table:
        scheduler.every(seconds).seconds.do(guarded(name, job, wctx, uses_chain))


def run_loop(scheduler: schedule.Scheduler, stop: threading.Event) -> None:
    scheduler.run_all()
    while not stop.is_set():
        scheduler.run_pending()
        stop.wait(LOOP_SLEEP_S)


def main() -> int:
    settings = startup.settings_or_exit("DATABASE_URL")
    startup.schema_current_or_exit(settings, "worker")
    startup.require_or_exit(settings, "BOT_TOKEN", "TOKEN_ADDRESS", "HOT_WALLET_PRIVATE_KEY")
    wctx = build_worker_context(settings, "worker", dr.rpc_breaker(settings, background_probe=True),
                                dr.pg_breaker(settings, background_probe=True))
    stop = wctx.stop
    redis = dr.redis_client(settings)
    wctx.redis_breaker = dr.redis_breaker(settings, background_probe=True)
    cache = dr.Cache(redis, wctx.redis_breaker)
    dialogs = dr.DialogStore(redis, wctx.redis_breaker, wctx.pool, wctx.pg_breaker)
    dr.start_probers(stop, (wctx.pg_breaker, dr.pg_check(settings)), (wctx.chain.breaker, dr.rpc_check(wctx.chain)),
                     (wctx.redis_breaker, dr.redis_check(redis)))
    dr.recover_when_back(wctx.redis_breaker, lambda: dr.recover_redis(settings, dialogs, cache, wctx.transaction))
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    scheduler = schedule.Scheduler()
    schedule_jobs(scheduler, wctx, cache)
    log.info("worker started: token %s, deposits to %s, hot wallet %s", wctx.token.symbol,
             settings.deposit_address, wctx.chain.hot_wallet)
    run_loop(scheduler, stop)
    log.info("worker stopped")
    wctx.pool.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
