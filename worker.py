"""The background worker: python worker.py (systemd unit `worker`).

Two `schedule` loops over tables of jobs: the chain jobs (deposit monitoring,
withdrawal sending and reconciling, network recovery) in a thread of their own, so
a frozen node never holds up the others (notification delivery from the outbox,
the fallback processor every 5 s, the notification stream, request expiry, the
status report, cache warmup). Each job is guarded (an error is logged, the loop goes
on); chain jobs pause in blockchain maintenance mode, and the breakers make jobs fail
fast while their dependency is down. Probers re-check each dependency in the
background; when Redis returns, recovery runs. SIGTERM finishes the current jobs,
then exits.
"""
import logging
import os
import signal
import socket
import sys
import threading
from dataclasses import dataclass

import schedule

import dr
from botapi import delivery
from botapi.pacing import Pacer
from chain import reconciler, scanner, sender
from chain.rpc import is_transport_failure
from core.errors import BreakerOpen, LeaseLost
from db import notifications, service_status
from db.pool import is_outage
from runtime import startup
from runtime.leadership import WorkerLease
from runtime.worker_context import WorkerContext, build_worker_context

log = logging.getLogger("worker")

LOOP_SLEEP_S = 0.1
EXPIRY_INTERVAL_S = 60
STATUS_INTERVAL_S = 1
WARMUP_INTERVAL_S = 60
FALLBACK_INTERVAL_S = 5  # the report's fallback processor
DRAIN_BUDGET_S = 5  # longest one delivery job keeps the scheduler thread (the stream consumer shares it)
DELIVERY_INTERVAL_S = 0.2  # a drain that used its budget goes on at once, not WORKER_INTERVAL_S later


def guarded(name: str, job, wctx: WorkerContext, uses_chain: bool, needs_lease: bool):
    """Run `job` so that no exception stops the loop; chain jobs sit out maintenance mode, and jobs that act
    (chain, delivery) run only in the active worker."""
    def run():
        if uses_chain and wctx.settings.blockchain_maintenance_mode:
            return
        if needs_lease and not wctx.lease.active():
            return
        try:
            job()
        except (BreakerOpen, LeaseLost) as exc:
            log.debug("%s skipped: %s", name, exc)
        except Exception as exc:
            if is_transport_failure(exc) or dr.is_redis_outage(exc) or is_outage(exc):
                log.warning("%s: a dependency is unavailable (%s); its breaker takes over", name, type(exc).__name__)
            else:
                log.exception("job %s failed", name)
    return run


def report_status(wctx: WorkerContext, deposit_monitor, withdrawal_sender, redis) -> None:
    """Tell the bot and operators how the chain side is doing; refresh the heartbeat file."""
    breaker = wctx.chain.breaker
    status = {"breaker": breaker.state, "last_error": breaker.last_error,
              "maintenance": wctx.settings.blockchain_maintenance_mode,
              "scan_problem": deposit_monitor.problem, "funds_problem": withdrawal_sender.funds_problem,
              "scanned_block": deposit_monitor.scanned_to, "finalized_block": deposit_monitor.finalized,
              "notices_buffered": redis.notifier.buffered, "notices_dropped": redis.notifier.dropped,
              "lease": wctx.lease.report()}
    breakers = [breaker, wctx.pg_breaker, wctx.redis_breaker]
    dr.write_status_file(wctx.settings.state_dir, "worker", breakers, status)  # first: also with PostgreSQL down
    with wctx.transaction() as conn:
        if wctx.lease.active():  # the chain picture the bot and dr.py status go by is the active worker's
            service_status.put(conn, "rpc", status)
        status["notifications_pending"] = notifications.pending_count(conn)
    dr.write_status_file(wctx.settings.state_dir, "worker", breakers, status)


@dataclass
class Redis:
    """What the worker keeps in Redis, each behind the Redis breaker."""
    cache: dr.Cache
    dialogs: dr.DialogStore
    notifier: dr.NotificationService
    sent_keys: dr.SentKeys
    stream: dr.StreamConsumer


def chain_jobs(wctx: WorkerContext, deposit_monitor, withdrawal_sender) -> list:
    """Jobs that talk to the node: a frozen RPC may hold them up, never the others."""
    every = wctx.settings.worker_interval_s
    return [
        ("scan_deposits", every, deposit_monitor.scan, True, True),
        ("network_recovery", every, lambda: scanner.finish_network_recovery(wctx, deposit_monitor), True, True),
        ("send_withdrawals", every, withdrawal_sender.run, True, True),
        ("reconcile_withdrawals", every, lambda: reconciler.reconcile(wctx), True, True),
    ]


def other_jobs(wctx: WorkerContext, deposit_monitor, withdrawal_sender, redis: Redis, pacer) -> list:
    """Delivery, the fallback processor, the stream consumer, expiry, status and warmup."""
    every = wctx.settings.worker_interval_s
    stopping = wctx.stopping
    return [  # (name, interval, job, uses the chain, only in the active worker)
        ("deliver_outbox", min(every, DELIVERY_INTERVAL_S),
         lambda: delivery.drain(wctx, DRAIN_BUDGET_S, stopping=stopping, pacer=pacer), False, True),
        ("process_fallback", FALLBACK_INTERVAL_S,
         lambda: delivery.drain(wctx, DRAIN_BUDGET_S, stopping=stopping, table=notifications.FALLBACK, pacer=pacer,
                                sent_keys=redis.sent_keys), False, True),
        ("consume_stream", every, lambda: redis.stream.run(stopping=stopping), False, True),
        ("flush_notice_buffer", every, redis.notifier.flush, False, False),
        ("expire_deposit_requests", EXPIRY_INTERVAL_S, lambda: scanner.expire_requests(wctx), False, True),
        ("report_status", STATUS_INTERVAL_S,
         lambda: report_status(wctx, deposit_monitor, withdrawal_sender, redis), False, False),
        ("warmup_cache", WARMUP_INTERVAL_S, lambda: dr.warmup(redis.cache, wctx.transaction), False, False),
    ]


def scheduler_for(jobs: list, wctx: WorkerContext) -> schedule.Scheduler:
    scheduler = schedule.Scheduler()
    for name, seconds, job, uses_chain, needs_lease in jobs:
        scheduler.every(seconds).seconds.do(guarded(name, job, wctx, uses_chain, needs_lease))
    return scheduler


def run_loop(scheduler: schedule.Scheduler, stop: threading.Event) -> None:
    scheduler.run_all()
    while not stop.is_set():
        scheduler.run_pending()
        stop.wait(LOOP_SLEEP_S)


def main() -> int:
    settings = startup.settings_or_exit("DATABASE_URL", "BOT_TOKEN", "TOKEN_ADDRESS", "HOT_WALLET_PRIVATE_KEY")
    startup.schema_current_or_exit(settings, "worker")
    wctx = build_worker_context(settings, "worker", dr.rpc_breaker(settings, background_probe=True),
                                dr.pg_breaker(settings, background_probe=True))
    stop = wctx.stop
    client = dr.redis_client(settings)
    wctx.redis_breaker = dr.redis_breaker(settings, background_probe=True)
    pacer = Pacer(settings.telegram_max_msg_per_s)
    notifier = dr.NotificationService(client, wctx.redis_breaker, wctx.transaction, settings.notify_buffer_max)
    sent_keys = dr.SentKeys(client, wctx.redis_breaker, wctx.transaction)
    send = lambda chat_id, payload: delivery.send_notice(wctx, chat_id, payload, pacer)
    redis = Redis(cache=dr.Cache(client, wctx.redis_breaker),
                  dialogs=dr.DialogStore(client, wctx.redis_breaker, wctx.pool, wctx.pg_breaker), notifier=notifier,
                  sent_keys=sent_keys,
                  stream=dr.StreamConsumer(client, wctx.redis_breaker, f"worker-{os.getpid()}", send, sent_keys))
    breakers = [(wctx.pg_breaker, dr.pg_check(wctx.pool)), (wctx.chain.breaker, dr.rpc_check(wctx.chain)),
                (wctx.redis_breaker, dr.redis_check(client))]
    dr.start_probers(stop, *breakers)
    for breaker, _ in breakers:
        dr.alert_admins_on_change(breaker, notifier, lambda: wctx.settings.admin_ids, "worker")
    dr.recover_when_back(wctx.redis_breaker, lambda: dr.recover_redis(settings, redis.dialogs, redis.cache,
                                                                      wctx.transaction, notifier))
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    startup.reload_on_sighup(wctx.watcher)
    wctx.lease = WorkerLease(wctx.transaction, site=f"{socket.gethostname()}:{settings.state_dir.resolve()}")
    wctx.lease.renew()  # active at once when the lease is free (or was this site's)
    lease_thread = threading.Thread(target=wctx.lease.keep, args=(stop,), name="worker-lease")
    lease_thread.start()
    deposit_monitor, withdrawal_sender = scanner.DepositMonitor(wctx), sender.WithdrawalSender(wctx)
    chain = scheduler_for(chain_jobs(wctx, deposit_monitor, withdrawal_sender), wctx)
    others = scheduler_for(other_jobs(wctx, deposit_monitor, withdrawal_sender, redis, pacer), wctx)
    chain_thread = threading.Thread(target=run_loop, args=(chain, stop), name="chain-jobs")
    chain_thread.start()
    log.info("worker started: token %s, deposits to %s, hot wallet %s", wctx.token.symbol,
             settings.deposit_address, wctx.chain.hot_wallet)
    run_loop(others, stop)
    chain_thread.join()  # SIGTERM: the chain job in progress finishes
    lease_thread.join()  # then the lease is let go: a standby takes over at once
    log.info("worker stopped")
    wctx.pool.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
