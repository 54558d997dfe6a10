"""Loss-curve PNG of a run from its metrics.jsonl (`wmkit train plot RUN`)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on training nodes
import matplotlib.pyplot as plt  # noqa: E402

from .trainer import METRICS_FILE  # noqa: E402


def read_metrics(run_dir: str | Path) -> list[dict]:
    """Rows of RUN/metrics.jsonl; a resumed run's repeated steps keep their last row."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no metrics (is {run_dir} a training run directory?)")
    by_step: dict[int, dict] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                row = json.loads(line)
            except ValueError as err:
                raise ValueError(f"{path}:{n}: unreadable row ({err})") from err
            by_step[int(row["step"])] = row
    return [by_step[s] for s in sorted(by_step)]


def plot_loss(run_dir: str | Path, out: str | Path | None = None, smooth: int = 10) -> Path:
    """Write the loss curve (raw and a `smooth`-step moving average) and the learning rate
    to `out` (default RUN/loss.png); return the path."""
    rows = read_metrics(run_dir)
    if not rows:
        raise ValueError(f"{run_dir}: metrics.jsonl has no rows")
    steps = [r["step"] for r in rows]
    loss = [r["loss"] for r in rows]
    k = max(1, min(smooth, len(loss)))
    avg = [sum(loss[max(0, i - k + 1) : i + 1]) / len(loss[max(0, i - k + 1) : i + 1]) for i in range(len(loss))]
    fig, (ax, ax_lr) = plt.subplots(2, 1, figsize=(7, 5), sharex=True, height_ratios=(3, 1))
    ax.plot(steps, loss, alpha=0.35, label="loss")
    ax.plot(steps, avg, label=f"mean of {k} steps")
    ax.set_ylabel("flow-matching loss")
    ax.set_title(str(Path(run_dir).name))
    ax.legend()
    ax_lr.plot(steps, [r["lr"] for r in rows])
    ax_lr.set_xlabel("step")
    ax_lr.set_ylabel("lr")
    fig.tight_layout()
    out = Path(out) if out else Path(run_dir) / "loss.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


__all__ = ["plot_loss", "read_metrics"]
