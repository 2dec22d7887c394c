"""Benchmark outputs: perf_analyzer-style CSV, a table for stdout, and PNG plots."""

from __future__ import annotations

import csv
from typing import Sequence

from clients.files import atomic_path

# perf_analyzer's CSV columns (times in µs). pixelport fills Client Send with the client's
# preprocessing (letterbox + packing) and Client Recv with its postprocessing (inverse letterbox).
CSV_COLUMNS = ["Concurrency", "Inferences/Second", "Client Send", "Server Queue", "Server Compute Input",
               "Server Compute Infer", "Server Compute Output", "Client Recv", "p50 latency", "p90 latency",
               "p95 latency", "p99 latency"]


def latency_rows(levels: Sequence[dict]) -> list[list]:
    rows = []
    for lv in levels:
        s = lv["server_us"]
        rows.append([lv["concurrency"], round(lv["throughput"], 3), round(lv["client_preprocess_us"]),
                     round(s["queue"]), round(s["compute_input"]), round(s["compute_infer"]),
                     round(s["compute_output"]), round(lv["client_postprocess_us"]), round(lv["p50_us"]),
                     round(lv["p90_us"]), round(lv["p95_us"]), round(lv["p99_us"])])
    return rows


def write_csv(path: str, header: Sequence[str], rows: Sequence[Sequence]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


def format_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    cells = [[str(h) for h in header]] + [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    out = ["| " + " | ".join(str(h) for h in header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(out)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
    return str(v)


def plot_latency(path: str, levels: Sequence[dict], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conc = [lv["concurrency"] for lv in levels]
    fig, ax = plt.subplots(figsize=(7, 4))
    for q in ("p50", "p90", "p95", "p99"):
        ax.plot(conc, [lv[f"{q}_us"] / 1e3 for lv in levels], marker="o", label=f"{q} latency")
    ax.set_xlabel("concurrency")
    ax.set_ylabel("latency (ms)")
    ax2 = ax.twinx()
    ax2.plot(conc, [lv["throughput"] for lv in levels], color="black", marker="s", linestyle="--",
             label="throughput")
    ax2.set_ylabel("inferences/s")
    lines = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax.legend(lines, [ln.get_label() for ln in lines], loc="upper left", fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    save_png(fig, path)


def plot_bars(path: str, names: Sequence[str], values: Sequence[float], ylabel: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(names)), 4))
    ax.bar(range(len(names)), values, color="#4c72b0")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.tight_layout()
    save_png(fig, path)


def save_png(fig, path: str) -> None:
    """Write a matplotlib figure atomically as PNG, then free it."""
    import matplotlib.pyplot as plt

    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=100, format="png")  # the temporary name has no .png to infer from
    finally:
        plt.close(fig)
