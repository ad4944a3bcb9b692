"""The report's figures as PNG bytes, drawn with matplotlib's Agg canvas (no display needed).

Figures are built as :class:`matplotlib.figure.Figure` on a :class:`FigureCanvasAgg` rather than
through ``pyplot``: no global backend switch and no figure registry, so a report drawn inside
another program leaves its matplotlib state alone. The PNG bytes are both written next to the
tables and embedded in ``index.html``.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from ablate.metrics import METRIC_LABELS
from ablate.report.model import Figure, ImportanceBars, LearningCurves, RocPr, SeedPoints

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure as MplFigure

    from ablate.metrics import Curves

DPI = 100
_LABELS = {**METRIC_LABELS, "loss": "loss"}


def png(figure: Figure) -> bytes:
    """The PNG of one report figure."""
    data = figure.data
    if isinstance(data, SeedPoints):
        return seed_points(data.groups, data.metrics)
    if isinstance(data, LearningCurves):
        return learning_curves(data.curves, data.metric)
    if isinstance(data, ImportanceBars):
        return importance_bars(data.importances)
    if isinstance(data, RocPr):
        return roc_pr(data.curves, data.auc, data.ap, data.title)
    raise TypeError(f"no plot for {type(data).__name__}")


def _figure(width: float, height: float, ncols: int = 1) -> tuple[MplFigure, list[Axes]]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(width, height))
    FigureCanvasAgg(fig)  # attaches itself as fig.canvas: what savefig renders with
    axes = fig.subplots(1, ncols, squeeze=False)
    return fig, list(axes[0])


def _png(fig: MplFigure) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def seed_points(groups: Sequence[tuple[str, Mapping[str, Mapping[int, float]]]],
                metrics: Sequence[str]) -> bytes:
    """Per-seed final results of each group (variant or configuration), one panel per metric:
    a point per seed, the mean as a bar and ±1 std as an error bar.

    Args:
        groups: ``(label, {metric: {seed: value}})`` in display order.
        metrics: Which metrics get a panel.
    """
    height = max(2.5, 0.45 * len(groups) + 1.2)
    fig, axes = _figure(5.0 * len(metrics), height, ncols=len(metrics))
    rng = np.random.default_rng(0)  # fixed jitter: the same study gives the same picture
    labels = [label for label, _ in groups]
    ys = np.arange(len(groups))[::-1]
    for ax, metric in zip(axes, metrics, strict=True):
        for y, (_, by_metric) in zip(ys, groups, strict=True):
            values = np.array(list(by_metric.get(metric, {}).values()), dtype=float)
            if values.size == 0:
                continue
            jitter = rng.uniform(-0.12, 0.12, size=values.size)
            ax.scatter(values, y + jitter, s=22, color="tab:blue", alpha=0.8, zorder=3)
            mean = values.mean()
            std = values.std(ddof=1) if values.size > 1 else 0.0
            ax.errorbar(mean, y, xerr=std, fmt="|", color="black", ms=16, capsize=4, zorder=4)
        ax.set_yticks(ys, labels)
        ax.set_xlabel(f"final {_LABELS.get(metric, metric)}")
        ax.grid(axis="x", alpha=0.3)
        ax.set_ylim(-0.7, len(groups) - 0.3)
    return _png(fig)


def learning_curves(curves: Mapping[str, Mapping[int, float]], metric: str) -> bytes:
    """Mean per-epoch ``metric`` of each group over its seeds.

    Args:
        curves: ``{label: {epoch: mean value}}``.
        metric: The metric's name, for the axis label.
    """
    from matplotlib.ticker import MaxNLocator

    fig, (ax,) = _figure(7.0, 4.0)
    for label, by_epoch in curves.items():
        if by_epoch:
            epochs = sorted(by_epoch)
            ax.plot(epochs, [by_epoch[e] for e in epochs], marker="o", ms=3, label=label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="epoch", ylabel=f"test {_LABELS.get(metric, metric)} (mean over seeds)")
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize="small", loc="best")
    return _png(fig)


def roc_pr(curves: Curves, auc: float, ap: float, title: str) -> bytes:
    """ROC and precision–recall curves of one run's frame-level test scores."""
    fig, (roc, pr) = _figure(9.0, 4.0, ncols=2)
    roc.plot(curves.fpr, curves.tpr)
    roc.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8)
    roc.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC (AUC {auc:.4f})")
    pr.plot(curves.recall, curves.precision)
    pr.set(xlabel="recall", ylabel="precision", title=f"precision–recall (AP {ap:.4f})")
    fig.suptitle(title)
    return _png(fig)


def importance_bars(importances: Mapping[str, float]) -> bytes:
    """Horizontal bars of parameter importances, most important on top."""
    items = list(importances.items())
    fig, (ax,) = _figure(6.0, max(2.0, 0.45 * len(items) + 1.0))
    ys = np.arange(len(items))[::-1]
    ax.barh(ys, [v for _, v in items], color="tab:blue")
    ax.set_yticks(ys, [k for k, _ in items])
    ax.set(xlabel="importance (fANOVA, sums to 1)", xlim=(0, 1))
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)
