"""The loss curve of a training run (``metrics.jsonl`` -> ``loss.png``)."""

from __future__ import annotations

import json
from pathlib import Path

from shirg.io import atomic_write


def read_metrics(path: str | Path) -> list[dict]:
    """The run's logged steps (one JSON object per line; unreadable lines are skipped)."""
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by an interruption
    return rows


def _moving_average(values: list[float], window: int) -> list[float]:
    """Mean of each value and the ``window - 1`` before it (fewer at the start)."""
    return [sum(values[max(0, i - window + 1) : i + 1]) / len(values[max(0, i - window + 1) : i + 1])
            for i in range(len(values))]


def loss_curve(metrics: str | Path, out: str | Path, title: str = "") -> Path | None:
    """Plot loss per logged step (raw and a moving average) with the learning rate on a second axis.
    Returns the PNG path, or None when there is nothing logged yet."""
    rows = [r for r in read_metrics(metrics) if isinstance(r.get("loss"), (int, float))]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    loss = [r["loss"] for r in rows]
    window = max(1, len(rows) // 50)
    smooth = _moving_average(loss, window)
    accs = sorted(k for k in rows[-1] if k.startswith("acc_"))  # e.g. stage 0's per-head, per-view accuracy
    if accs:
        fig, (ax, ax_acc) = plt.subplots(1, 2, figsize=(12, 4), dpi=110)
        for k in accs:
            vals = [r.get(k, float("nan")) for r in rows]
            ax_acc.plot(steps, _moving_average(vals, window), lw=1.2, label=k.removeprefix("acc_"),
                        ls="--" if k.endswith("lowres") else "-")
        ax_acc.set_xlabel("optimizer step")
        ax_acc.set_ylabel(f"accuracy (moving average, {window} logs)")
        ax_acc.set_ylim(0, 1)
        ax_acc.grid(alpha=0.3)
        ax_acc.legend(fontsize=8)
    else:
        fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    ax.plot(steps, loss, color="#9ecae1", lw=0.8, label="loss")
    ax.plot(steps, smooth, color="#08519c", lw=1.6, label=f"moving average ({window} logs)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (mean of the heads' CE)" if accs else "diffusion loss (masked-slot CE)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    lrs = [max(r["lr"].values()) if isinstance(r.get("lr"), dict) and r["lr"] else None for r in rows]
    if any(v is not None for v in lrs):
        ax2 = ax.twinx()
        ax2.plot(steps, [v if v is not None else float("nan") for v in lrs], color="#e6550d", lw=0.8, alpha=0.7,
                 label="learning rate")
        ax2.set_ylabel("learning rate", color="#e6550d")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(title or f"{Path(metrics).parent.name}: {len(rows)} logged steps, last loss {loss[-1]:.4f}",
                 fontsize=9)
    fig.tight_layout()
    atomic_write(out, lambda p: fig.savefig(p, format="png"))
    plt.close(fig)
    return Path(out)
