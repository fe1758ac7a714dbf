"""The accuracy ladder as a figure: FP zero-shot, FP CoOp, PTQ zero-shot and P4Q per setting, for
the in-domain bed (Fashion-MNIST) and the transfer bed (MNIST, Fashion-MNIST). `demo_report.py`
calls it with the demo's numbers; the README shows the figure it wrote (docs/img/ladder.png)."""

from __future__ import annotations

from pathlib import Path

STAGES = ("FP zero-shot", "FP CoOp", "PTQ zero-shot", "P4Q")
COLORS = ("#9e9e9e", "#4c72b0", "#dd8452", "#55a868")


def _panel(ax, title: str, groups: list[tuple[str, dict]]) -> None:
    width = 0.8 / len(STAGES)
    for i, (stage, color) in enumerate(zip(STAGES, COLORS)):
        offset = (i - (len(STAGES) - 1) / 2) * width
        labelled = False
        for g, (_, cells) in enumerate(groups):
            v = cells.get(stage)
            if v is None:
                continue
            ax.bar(g + offset, v, width, color=color, label=None if labelled else stage)
            ax.text(g + offset, v + 0.5, f"{v:.1f}", ha="center", va="bottom", fontsize=7, rotation=90)
            labelled = True
    ax.set_xticks(range(len(groups)), [name for name, _ in groups], fontsize=9)
    ax.set_ylabel("top-1 accuracy on the test split (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_axisbelow(True)


def plot_ladders(in_domain: list[tuple[str, dict]], transfer: list[tuple[str, dict]], path: Path) -> Path:
    """Each group is (label, {stage: top-1 %}); a missing stage is left out of its group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(t, g) for t, g in (("in-domain test bed: Fashion-MNIST", in_domain),
                                  ("transfer test bed (pretrained on glyphs only)", transfer)) if g]
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.6), squeeze=False)
    top = max(v for _, groups in panels for _, cells in groups for v in cells.values() if v is not None)
    for ax, (title, groups) in zip(axes[0], panels):
        _panel(ax, title, groups)
        ax.set_ylim(0, min(100, top + 12))
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(STAGES), frameon=False, fontsize=9)
    fig.suptitle("P4Q accuracy ladder (16 shots, seed 1)", fontsize=11)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
