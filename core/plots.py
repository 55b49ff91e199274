"""`curves.png` beside every run's metrics.jsonl: the few curves that say whether a run is learning.

One panel per group of metrics, against step; groups whose metrics a run never logged are left out, so the same
function serves RLVR (training and held-out reward, KL, response length, finished fraction) and the SFT / DPO /
RM stages (loss, grad norm, their accuracies). Held-out reward points carry their 95% interval when logged.
"""

from __future__ import annotations

from pathlib import Path

from core.metrics import read_metrics

# (panel title, [(metric key, label)]) in display order
RLVR_PANELS = [
    ("reward (verifier score, 0-1)", [("reward/mean", "training"), ("eval/reward/mean", "held-out (greedy)")]),
    ("KL(policy || reference) per sequence", [("kl/sequence_mean", "KL")]),
    ("response length (tokens)", [("response/length_mean", "training"), ("eval/length_mean", "held-out")]),
    ("finished (ended with a stop token)", [("response/finished_fraction", "training"),
                                            ("eval/finished_fraction", "held-out")]),
]
STAGE_PANELS = [
    ("loss", [("loss", "loss")]),
    ("grad norm", [("grad_norm", "grad norm")]),
    ("preference accuracy", [("rewards/accuracies", "DPO implicit reward"), ("accuracy", "reward model"),
                             ("eval/accuracy", "reward model, held-out")]),
    ("DPO reward margin", [("rewards/margins", "margin")]),
]


def plot_curves(run_dir: str | Path, panels=None, out: str | Path | None = None, title: str | None = None
                ) -> Path | None:
    """Draw `run_dir/metrics.jsonl` into `run_dir/curves.png` (or `out`). Returns the path, or None when there is
    nothing to draw yet. `panels` defaults to the RLVR panels when the run logged rewards, else the stage panels."""
    import matplotlib  # lazy: a second to import, and only drawn when a run ends or saves

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    if not (run_dir / "metrics.jsonl").is_file():
        return None
    rows = read_metrics(run_dir)
    if panels is None:
        panels = RLVR_PANELS if any("reward/mean" in r for r in rows) else STAGE_PANELS
    drawn = [(t, [(k, lab) for k, lab in series if any(_num(r.get(k)) for r in rows)]) for t, series in panels]
    drawn = [(t, s) for t, s in drawn if s]
    if not drawn:
        return None
    cols = 2 if len(drawn) > 2 else len(drawn)
    rows_n = (len(drawn) + cols - 1) // cols
    fig, axes = plt.subplots(rows_n, cols, figsize=(5.2 * cols, 3.3 * rows_n), squeeze=False)
    for ax in axes.flat[len(drawn):]:
        ax.set_visible(False)
    for ax, (panel_title, series) in zip(axes.flat, drawn):
        for key, label in series:
            pts = [(r["step"], r[key], r) for r in rows if _num(r.get(key))]
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            held_out = key.startswith("eval/")
            line, = ax.plot(xs, ys, marker="o" if held_out or len(xs) < 30 else None, markersize=3.5, label=label)
            lo, hi = f"{key}_ci95_low", f"{key}_ci95_high"
            if held_out and all(_num(p[2].get(lo)) for p in pts):
                ax.fill_between(xs, [p[2][lo] for p in pts], [p[2][hi] for p in pts], alpha=0.2,
                                color=line.get_color(), label="95% interval")
        ax.set_title(panel_title, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if len(series) > 1 or any(k.startswith("eval/") for k, _ in series):
            ax.legend(fontsize=7)
    fig.suptitle(title or run_dir.name, fontsize=10)
    fig.tight_layout()
    path = Path(out) if out else run_dir / "curves.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v  # not NaN
