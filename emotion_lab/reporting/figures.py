"""A run's figures: each function takes plain numbers (or an Optuna study) and returns a matplotlib Figure.

Where a maintained library draws a figure, it draws it here: the confusion matrix is scikit-learn's
ConfusionMatrixDisplay, the reliability diagram its CalibrationDisplay, a sweep's history and importances
Optuna's matplotlib plots. The rest are small matplotlib code, each saying why. Figures are built on a
pyplot-free Figure (Optuna's are taken out of pyplot as soon as drawn), so drawing them needs no display
and leaves the process's plotting backend and style (a notebook's inline plots, say) as they were.

The callback `emotion_lab.callbacks.figures.RunFigures` draws them after a test; other tools can
call them on the numbers in a run folder. Titles carry the run's name and headline metric.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import matplotlib
import numpy as np
from matplotlib.colors import Colormap, LinearSegmentedColormap
from matplotlib.figure import Figure
from sklearn.calibration import CalibrationDisplay
from sklearn.metrics import ConfusionMatrixDisplay

from emotion_lab.labels import LABELS

# Per-class test F1 the reference BERT-BiLSTM-attention build reported (its own report, weighted 0.70,
# macro 0.61; docs/experiments/2026-11-27-calibration-and-figures.md): every run's F1 chart shows it.
REFERENCE_F1 = {"sadness": 0.73, "joy": 0.81, "love": 0.40, "anger": 0.61, "fear": 0.63, "surprise": 0.48}


def f1_bars(f1: Mapping[str, float], title: str, reference: Mapping[str, float] | None = REFERENCE_F1) -> Figure:
    """Per-class F1 as bars, with the reference build's beside them."""
    # Hand-drawn: no maintained plot puts per-class scores beside a reference's.
    fig = Figure(figsize=(8, 4.5))
    ax = fig.subplots()
    x = np.arange(len(LABELS))
    width = 0.4 if reference else 0.7
    ours = ax.bar(x - (width / 2 if reference else 0), [f1[label] for label in LABELS], width, label="this run")
    ax.bar_label(ours, fmt="%.2f", fontsize=8)
    if reference:
        theirs = ax.bar(x + width / 2, [reference[label] for label in LABELS], width, label="reference build")
        ax.bar_label(theirs, fmt="%.2f", fontsize=8)
    ax.set(xticks=x, xticklabels=LABELS, ylim=(0, 1.08), ylabel="F1", xlabel="emotion", title=title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def class_pies(counts: Mapping[str, Sequence[int]], title: str) -> Figure:
    """One pie per split: the share of each emotion, with its count."""
    # Hand-drawn: a class distribution is a plain matplotlib pie; no library wraps it.
    fig = Figure(figsize=(5 * len(counts), 5))
    axes = fig.subplots(1, len(counts))
    for ax, (split, split_counts) in zip(np.atleast_1d(axes), counts.items()):
        total = sum(split_counts)
        ax.pie(
            split_counts,
            labels=[f"{label}\n{n}" for label, n in zip(LABELS, split_counts)],
            autopct=lambda share: f"{share:.1f}%",
            startangle=90,
            counterclock=False,
        )
        ax.set_title(f"{split} ({total} sentences)")
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1, 0.92))  # room for the title above the pies' own titles
    return fig


def precision_recall_f1_lines(scores: Mapping[str, Mapping[str, float]], title: str) -> Figure:
    """Precision, recall and F1 per class as three lines (`scores[metric][label]`)."""
    # Hand-drawn: no maintained plot takes per-class scores already computed.
    fig = Figure(figsize=(8, 4.5))
    ax = fig.subplots()
    for metric, marker in (("precision", "o"), ("recall", "s"), ("f1", "^")):
        ax.plot(LABELS, [scores[metric][label] for label in LABELS], marker=marker, label=metric)
    ax.set(ylim=(0, 1.02), ylabel="score", xlabel="emotion", title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def confusion_heatmap(matrix: np.ndarray, title: str) -> Figure:
    """The confusion matrix normalised by true class (rows: true emotion, recall on the diagonal), each
    cell's share written in it, labelled with the emotions."""
    matrix = np.asarray(matrix, dtype=float)
    shares = matrix / np.clip(matrix.sum(1, keepdims=True), 1, None)
    fig = Figure(figsize=(7, 6))
    ax = fig.subplots()
    display = ConfusionMatrixDisplay(shares, display_labels=list(LABELS))
    display.plot(ax=ax, cmap="Blues", values_format=".2f", im_kw={"vmin": 0, "vmax": 1}, colorbar=False)
    fig.colorbar(display.im_, ax=ax, label="share of the true class")
    ax.set(xlabel="predicted", ylabel="true")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def reliability_diagram(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray, float]], title: str, bins: int = 15
) -> Figure:
    """Top-label reliability: accuracy against confidence per bin (`bins` equal widths), one curve per
    name (e.g. raw and temperature-scaled), each labelled with its ECE; below, how many sentences fall
    in each bin (ECE weighs bins so). `curves[name] = (confidence of the predicted label, correct, ece)`."""
    fig = Figure(figsize=(6, 7.5))
    ax, counts = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": (3, 1)})
    for name, (confidence, correct, ece) in curves.items():
        display = CalibrationDisplay.from_predictions(
            np.asarray(correct), np.asarray(confidence), n_bins=bins, pos_label=1, name=f"{name} (ECE {ece:.4f})", ax=ax
        )
        # CalibrationDisplay draws the curve only; its bins' weights as a histogram, as scikit-learn's example does.
        counts.hist(confidence, bins=np.linspace(0, 1, bins + 1), histtype="step", color=display.line_.get_color())
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="", ylabel="accuracy")
    ax.set_title(title)
    ax.legend(loc="upper left")
    counts.set(xlabel="confidence (probability of the predicted label)", ylabel="sentences")
    fig.tight_layout()
    return fig


def attention_words(rows: Sequence[tuple[str, Sequence[str], Sequence[float]]], title: str) -> Figure:
    """Sentences as rows of words, each word shaded by the share of attention it received.
    `rows = [(row label, words, weights), ...]`; weights of a row sum to 1 over its words."""
    top = max(max(weights, default=0.0) for _, _, weights in rows) or 1.0
    return _word_grid(rows, title, "Reds", (0.0, top), "share of attention")


# The server's page shades words in the same colours: orange against the label, blue for it.
ATTRIBUTION_COLOURS = LinearSegmentedColormap.from_list(
    "against_for", [(251 / 255, 146 / 255, 60 / 255), (1.0, 1.0, 1.0), (96 / 255, 165 / 255, 250 / 255)]
)


def attribution_words(rows: Sequence[tuple[str, Sequence[str], Sequence[float]]], title: str) -> Figure:
    """Sentences as rows of words, each word shaded by its attribution to the predicted label: blue for,
    orange against, on one scale centred on 0 for all rows. `rows = [(row label, words, scores), ...]`."""
    top = max(max((abs(s) for s in scores), default=0.0) for _, _, scores in rows) or 1.0
    return _word_grid(rows, title, ATTRIBUTION_COLOURS, (-top, top), "attribution to the predicted label")


def _word_grid(
    rows: Sequence[tuple[str, Sequence[str], Sequence[float]]],
    title: str,
    cmap: str | Colormap,
    limits: tuple[float, float],
    scale_label: str,
) -> Figure:
    # Hand-drawn: no maintained plot shades words of different sentences by weight.
    width = max(len(words) for _, words, _ in rows)
    values = np.full((len(rows), width), np.nan)
    for row, (_, _, weights) in enumerate(rows):
        values[row, : len(weights)] = weights
    fig = Figure(figsize=(min(24, max(8, 1.0 * width + 3)), 0.7 * len(rows) + 1.6))
    ax = fig.subplots()
    image = ax.imshow(values, cmap=cmap, vmin=limits[0], vmax=limits[1], aspect="auto")
    strong = 0.6 * max(abs(limits[0]), abs(limits[1]))
    for row, (_, words, weights) in enumerate(rows):
        for col, (word, weight) in enumerate(zip(words, weights)):
            colour = "white" if abs(weight) > strong else "black"
            ax.text(col, row, word, ha="center", va="center", fontsize=8, color=colour)
    ax.set(xticks=[], yticks=np.arange(len(rows)), yticklabels=[label for label, _, _ in rows])
    ax.set(xlabel="words of the sentence, in order", ylabel="true -> predicted (probability)")
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, label=scale_label, fraction=0.03)
    fig.tight_layout()
    return fig


def f1_bars_runs(f1_by_run: Mapping[str, Mapping[str, float]], title: str) -> Figure:
    """Per-class F1 of several runs as grouped bars, one colour per run."""
    # Hand-drawn: no maintained plot groups per-class scores of several runs.
    fig = Figure(figsize=(min(16, max(8, 0.6 * len(LABELS) * len(f1_by_run))), 5.2))
    ax = fig.subplots()
    x = np.arange(len(LABELS))
    width = 0.8 / len(f1_by_run)
    for i, (run, f1) in enumerate(f1_by_run.items()):
        bars = ax.bar(x - 0.4 + width * (i + 0.5), [f1[label] for label in LABELS], width, label=run)
        if len(f1_by_run) <= 4:
            ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set(xticks=x, xticklabels=LABELS, ylim=(0, 1.08), ylabel="test F1", xlabel="emotion")
    ax.set_title(title, pad=12 + 14 * ((len(f1_by_run) + 2) // 3))
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def _optuna_figure(draw: Callable[[], Any], title: str) -> Figure:
    """The figure of an Optuna matplotlib plot, out of pyplot, with the process's style left as it was."""
    import matplotlib.pyplot as plt
    from optuna.exceptions import ExperimentalWarning

    with matplotlib.rc_context(), warnings.catch_warnings():  # the plots switch pyplot to the ggplot style
        warnings.simplefilter("ignore", ExperimentalWarning)  # Optuna marks its matplotlib plots experimental
        ax = draw()
    plt.close(ax.figure)
    ax.set_title("", loc="left")  # Optuna's generic title, where ours would overlap it
    ax.set_title(title)
    return ax.figure


def optimisation_history(study: Any, title: str, metric: str) -> Figure:
    """A sweep's objective per complete trial and the best so far (Optuna's plot_optimization_history)."""
    from optuna.visualization.matplotlib import plot_optimization_history

    fig = _optuna_figure(lambda: plot_optimization_history(study, target_name=metric), title)
    fig.axes[0].legend(loc="lower right")  # Optuna puts it outside the axes, where a saved figure cuts it off
    fig.set_size_inches(8, 4.5)
    fig.tight_layout()
    return fig


def param_importances(study: Any, title: str, evaluator: Any = None, metric: str = "objective") -> Figure:
    """Hyperparameter importances as horizontal bars, most important on top (Optuna's plot_param_importances)."""
    from optuna.visualization.matplotlib import plot_param_importances

    fig = _optuna_figure(lambda: plot_param_importances(study, evaluator=evaluator, target_name=metric), title)
    fig.set_size_inches(8, max(3.0, 0.45 * len(fig.axes[0].get_yticks()) + 1.5))
    fig.tight_layout()
    return fig


def save(fig: Figure, path_without_suffix) -> list[str]:
    """Write `fig` as PNG and SVG; returns the paths."""
    paths = [f"{path_without_suffix}{suffix}" for suffix in (".png", ".svg")]
    for path in paths:
        fig.savefig(path, dpi=110)
    return paths
