"""The result table: one row per measure, printed once at the end of a run."""
import sys
import time
from dataclasses import dataclass

STARTED = time.monotonic()

COLUMNS = ("benchmark", "measure", "ours", "baseline", "ratio", "target", "met")


@dataclass(frozen=True)
class Row:
    """One measure: our figure, the baseline's, their ratio and the target it is judged by."""

    benchmark: str
    measure: str
    ours: str
    baseline: str = "-"
    ratio: float | None = None
    target: str = "-"
    met: bool | None = None

    def cells(self) -> list[str]:
        """The row as table cells."""
        ratio = "-" if self.ratio is None else f"{self.ratio:.2f}"
        met = "-" if self.met is None else ("yes" if self.met else "NO")
        return [self.benchmark, self.measure, self.ours, self.baseline, ratio, self.target, met]


def failed(benchmark: str, error: BaseException) -> Row:
    """The row for a benchmark that could not finish."""
    return Row(benchmark, "did not finish", f"{type(error).__name__}: {error}"[:120], met=False)


def table(rows: list[Row]) -> str:
    """Rows as an aligned Markdown table."""
    lines = [list(COLUMNS)] + [row.cells() for row in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS))]
    render = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([render(lines[0]), rule] + [render(cells) for cells in lines[1:]])


def ms(seconds: float) -> str:
    """Seconds as milliseconds text."""
    return f"{seconds * 1000:.1f} ms"


def us(seconds: float) -> str:
    """Seconds as microseconds text."""
    return f"{seconds * 1e6:.2f} µs"


def progress(text: str) -> None:
    """One line of progress on stderr, with the seconds since the run started."""
    print(f"[{time.monotonic() - STARTED:6.1f} s] {text}", file=sys.stderr, flush=True)
