"""The table and the log-log plot of `python -m benchmarks.scale`'s results."""

import math
from pathlib import Path

from .labels import DETAILS, LEGEND

ALL_SIZES = (10_000, 100_000, 1_000_000)


def _get(record: dict, path: tuple):
    for key in path:
        if not isinstance(record, dict) or key not in record:
            return None
        record = record[key]
    return record


def _slope(points: list[tuple[int, float]]) -> float | None:
    """The log-log slope between the two largest sizes measured."""
    good = [(n, c) for n, c in points if c and c > 0]
    if len(good) < 2:
        return None
    (n1, c1), (n2, c2) = good[-2], good[-1]
    return math.log(c2 / c1) / math.log(n2 / n1)


def table(result: dict, stage_names: list[str]) -> str:
    """Markdown: CPU seconds and added peak memory per stage and size; sizes not run are extrapolated from the
    two largest measured (at the measured slope, never below linear); then the stage-specific figures."""
    measured = sorted(int(n) for n in result["sizes"])
    beyond = [n for n in ALL_SIZES if n > max(measured)] if max(measured) in ALL_SIZES else []
    columns = measured + beyond
    lines = ["| stage | " + " | ".join(f"{n:,} items" for n in columns) + " | slope |",
             "|---|" + "---:|" * len(columns) + "---:|"]
    for name in stage_names:
        cells, points = [], []
        for n in measured:
            record = result["sizes"][str(n)].get(name)
            if record is None:
                cells.append("not measured")
            elif "error" in record:
                cells.append(record["error"][:60])
            elif "not_run" in record:
                cells.append(record["not_run"])
            else:
                points.append((n, record["cpu_s"]))
                peak = record.get("peak_mb")
                cells.append(f"{record['cpu_s']:.3g} s" + ("" if peak is None else f", +{max(peak, 0):.0f} MB"))
        slope = _slope(points)
        for n in columns[len(measured):]:
            if not points:
                cells.append("not measured")
            else:
                last_n, last_c = points[-1]
                cells.append(f"~{last_c * (n / last_n) ** max(slope or 1.0, 1.0):.3g} s (extrapolated)")
        batches = {(result["sizes"][str(n)].get(name) or {}).get("batch") for n in measured} - {None}
        label = f"{name} (batch {batches.pop()})" if len(batches) == 1 and 64 not in batches else name
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {'' if slope is None else f'{slope:.2f}'} |")
    details = ["", "| stage | figure | " + " | ".join(f"{n:,}" for n in measured) + " |",
               "|---|---|" + "---:|" * len(measured)]
    for name in stage_names:
        for label, path, fmt in DETAILS.get(name, []):
            values = [_get(result["sizes"][str(n)].get(name) or {}, path) for n in measured]
            details.append(f"| {name} | {label} | "
                           + " | ".join("" if v is None else fmt.format(v) for v in values) + " |")
    return "\n".join(lines + details)


def plot(result: dict, stage_names: list[str], path: Path) -> None:
    """CPU seconds against catalogue size, log-log, one line per stage, with a dashed slope-1 (linear) reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 5.5))
    sizes = sorted(int(n) for n in result["sizes"])
    anchor = None
    for i, name in enumerate(stage_names):
        points = [(n, (result["sizes"][str(n)].get(name) or {}).get("cpu_s")) for n in sizes]
        points = [(n, c) for n, c in points if c and c > 0]
        if points:  # past the 10 colours of the cycle, another marker and line style
            ax.plot(*zip(*points), marker="os^"[i // 10 % 3], linestyle=("-", "-.", ":")[i // 10 % 3],
                    label=LEGEND.get(name, name))
            anchor = anchor or points[0]
    if anchor is not None and len(sizes) > 1:
        xs = [sizes[0], sizes[-1]]
        ax.plot(xs, [anchor[1] * x / anchor[0] for x in xs], "k--", alpha=0.5, label="linear (slope 1)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("catalogue items (log); interactions = 10 x items")
    ax.set_ylabel("CPU seconds (log)")
    ax.set_title("ilrec-trl: cost of each stage against catalogue size (1 thread)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
