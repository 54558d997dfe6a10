"""What a manifest holds: clips, hours and frames per source and resolution.

:func:`manifest_stats` computes the numbers as a frame, :func:`format_table`
prints them, :func:`plot_stats` draws them; the CLI's ``wmkit manifest stats``
chains the three.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from wmkit.manifests.ops import clip_duration_s

#: Resolution buckets named by the nearest standard height, each with the
#: smallest short side (min(width, height), pixels) it takes. The edges sit
#: midway between standards so a 1280x704 crop counts as 720p, not 480p.
#: Width or height 0 (not catalogued, e.g. a splat scene) is "unknown".
RESOLUTION_BUCKETS: tuple[tuple[str, int], ...] = (
    ("unknown", 0),
    ("<240p", 1),
    ("240p", 200),
    ("360p", 300),
    ("480p", 420),
    ("720p", 600),
    ("1080p", 900),
    ("1440p", 1260),
    ("2160p+", 1800),
)
TOTAL = "all"
STATS_COLUMNS = ("source", "resolution", "clips", "hours", "frames")


def resolution_bucket(width: pd.Series, height: pd.Series) -> pd.Categorical:
    """Bucket each clip by its short side (see :data:`RESOLUTION_BUCKETS`), as an ordered categorical."""
    short_side = np.minimum(width.to_numpy(dtype=np.int64), height.to_numpy(dtype=np.int64))
    labels = [label for label, _ in RESOLUTION_BUCKETS]
    edges = np.array([edge for _, edge in RESOLUTION_BUCKETS])
    codes = np.searchsorted(edges, short_side, side="right") - 1
    return pd.Categorical.from_codes(codes, categories=labels, ordered=True)


def _totals(source: str, resolution: str, duration_s: pd.Series, num_frames: pd.Series) -> dict:
    return {
        "source": source,
        "resolution": resolution,
        "clips": int(len(duration_s)),
        "hours": float(duration_s.sum()) / 3600.0,
        "frames": int(num_frames.sum()),
    }


def manifest_stats(df: pd.DataFrame) -> pd.DataFrame:
    """Clips, hours (sum of ``end_s - start_s``) and frames (sum of ``num_frames``).

    One row per (source, resolution bucket) present, then a ``resolution="all"``
    row closing each source, then the grand total ``("all", "all")``; sources in
    alphabetical order, buckets from low to high resolution.
    """
    work = pd.DataFrame(
        {
            "source": df["source"].astype(str).to_numpy(),
            "resolution": resolution_bucket(df["width"], df["height"]),
            "duration_s": clip_duration_s(df).to_numpy(),
            "num_frames": df["num_frames"].to_numpy(dtype=np.int64),
        }
    )
    rows = []
    for source, by_source in work.groupby("source", sort=True):
        for bucket, by_bucket in by_source.groupby("resolution", observed=True, sort=True):
            rows.append(_totals(source, str(bucket), by_bucket["duration_s"], by_bucket["num_frames"]))
        rows.append(_totals(source, TOTAL, by_source["duration_s"], by_source["num_frames"]))
    rows.append(_totals(TOTAL, TOTAL, work["duration_s"], work["num_frames"]))
    return pd.DataFrame(rows, columns=list(STATS_COLUMNS))


def format_table(stats: pd.DataFrame) -> str:
    """Render :func:`manifest_stats` output as plain text: names left-aligned, numbers right-aligned."""
    cells = {
        "source": stats["source"].astype(str).tolist(),
        "resolution": stats["resolution"].astype(str).tolist(),
        "clips": [f"{v:,}" for v in stats["clips"]],
        "hours": [f"{v:,.2f}" for v in stats["hours"]],
        "frames": [f"{v:,}" for v in stats["frames"]],
    }
    widths = {col: max([len(col)] + [len(v) for v in values]) for col, values in cells.items()}

    def line(values: dict[str, str]) -> str:
        return "  ".join(
            v.ljust(widths[col]) if col in ("source", "resolution") else v.rjust(widths[col]) for col, v in values.items()
        ).rstrip()

    rows = [line({col: col for col in cells})]
    rows += [line({col: values[i] for col, values in cells.items()}) for i in range(len(stats))]
    return "\n".join(rows)


def plot_stats(stats: pd.DataFrame, path: str | Path) -> None:
    """Save a PNG: hours per source stacked by resolution bucket, and clips per source.

    ``stats`` is :func:`manifest_stats` output. Drawn on a bare
    :class:`matplotlib.figure.Figure` (Agg canvas), so no display or pyplot
    state is needed.
    """
    per_bucket = stats[(stats["source"] != TOTAL) & (stats["resolution"] != TOTAL)]
    per_source = stats[(stats["source"] != TOTAL) & (stats["resolution"] == TOTAL)]
    grand = stats[(stats["source"] == TOTAL) & (stats["resolution"] == TOTAL)].iloc[0]
    sources = per_source["source"].tolist()
    hours = per_bucket.pivot(index="source", columns="resolution", values="hours").reindex(sources).fillna(0.0)
    # buckets with no hours (e.g. splat scenes, span 0) have nothing to stack
    buckets = [label for label, _ in RESOLUTION_BUCKETS if label in hours.columns and hours[label].sum() > 0]
    x = np.arange(len(sources))

    fig = Figure(figsize=(max(10.0, 0.9 * len(sources) + 6.0), 5.0), layout="constrained")
    ax_hours, ax_clips = fig.subplots(1, 2, width_ratios=[3, 2])
    # low to high resolution runs dark to bright; "unknown" is grey
    known = [label for label, _ in RESOLUTION_BUCKETS[1:]]
    colors = {label: colormaps["viridis"](i / (len(known) - 1)) for i, label in enumerate(known)}
    colors["unknown"] = "0.6"
    bottom = np.zeros(len(sources))
    for bucket in buckets:
        values = hours[bucket].to_numpy()
        # zero-height segments would still pin the y-limits (sticky edges), so draw only present ones
        present = values > 0
        ax_hours.bar(x[present], values[present], bottom=bottom[present], label=bucket, color=colors[bucket], width=0.6)
        bottom += values
    for xi, total in zip(x, bottom):
        ax_hours.annotate(f"{total:,.2f} h", (xi, total), ha="center", va="bottom", xytext=(0, 2), textcoords="offset points")
    rotation = {"rotation": 30, "ha": "right"} if len(sources) > 4 else {}
    ax_hours.set_xticks(x, sources, **rotation)
    ax_hours.set_xlabel("source")
    ax_hours.set_ylabel("hours")
    ax_hours.set_title("Hours per source, by resolution")
    handles, labels = ax_hours.get_legend_handles_labels()
    ax_hours.legend(handles[::-1], labels[::-1], title="resolution", fontsize="small")  # top of stack first
    ax_hours.margins(y=0.12)

    bars = ax_clips.bar(x, per_source["clips"].to_numpy(), color="C7", width=0.6)
    ax_clips.bar_label(bars, labels=[f"{c:,}" for c in per_source["clips"]], padding=2)
    ax_clips.set_xticks(x, sources, **rotation)
    ax_clips.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax_clips.set_xlabel("source")
    ax_clips.set_ylabel("clips")
    ax_clips.set_title("Clips per source")
    ax_clips.margins(y=0.12)

    fig.suptitle(f"Manifest: {grand['clips']:,} clips, {grand['hours']:,.2f} hours, {grand['frames']:,} frames")
    fig.savefig(path, dpi=100)
