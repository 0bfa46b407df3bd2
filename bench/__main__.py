"""python -m bench [name ...]: run the benchmarks (all, or the named ones) and print one table at the end."""
import logging
import signal
import sys
import time

from bench import breaker, delivery, latency, recovery, scanning
from bench.report import failed, progress, table

BENCHMARKS = {"breaker": breaker.run, "delivery": delivery.run, "recovery": recovery.run,
              "scanning": scanning.run, "latency": latency.run}


def interrupt(*_) -> None:
    """Ctrl-C and SIGTERM end a run the same way (even when started with SIGINT ignored, as in a background
    job), so every service started is stopped."""
    raise KeyboardInterrupt


def run_all(names: list[str]) -> tuple[list, bool]:
    """Run the named benchmarks in turn; their rows, and whether all finished."""
    rows, ok = [], True
    for name in names:
        progress(f"{name}: starting")
        try:
            rows += BENCHMARKS[name]()
        except Exception as exc:  # the other benchmarks still run; the table says this one did not finish
            logging.exception("benchmark %s failed", name)
            rows.append(failed(name, exc))
            ok = False
    return rows, ok


def main(argv: list[str]) -> int:
    """Run, print the table; exit 0 when every benchmark finished."""
    names = argv or list(BENCHMARKS)
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)
    started = time.monotonic()
    try:
        rows, ok = run_all(names)
    except KeyboardInterrupt:
        print("interrupted: everything started was stopped", file=sys.stderr)
        return 130
    print(table(rows))
    print(f"\n{len(names)} benchmark(s) in {time.monotonic() - started:.0f} s; ratios are measured side by side "
          f"in this run, targets are goals, not assertions.")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
