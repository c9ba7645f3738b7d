"""A run's figures: each function takes plain numbers and returns a matplotlib Figure.

Figures are built without pyplot, so drawing them needs no display and leaves the process's
plotting backend (a notebook's inline plots, say) as it was.

The callback `emotion_lab.callbacks.figures.RunFigures` draws them after a test; other tools can
call them on the numbers in a run folder. Titles carry the run's name and headline metric.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from emotion_lab.labels import LABELS

# Per-class test F1 the reference BERT-BiLSTM-attention build reported (its own report, weighted 0.70,
# macro 0.61; docs/experiments/2026-11-27-calibration-and-figures.md): every run's F1 chart shows it.
REFERENCE_F1 = {"sadness": 0.73, "joy": 0.81, "love": 0.40, "anger": 0.61, "fear": 0.63, "surprise": 0.48}


def f1_bars(f1: Mapping[str, float], title: str, reference: Mapping[str, float] | None = REFERENCE_F1) -> Figure:
    """Per-class F1 as bars, with the reference build's beside them."""
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
    """The confusion matrix normalised by true class (recall on the diagonal), with each cell's share."""
    matrix = np.asarray(matrix, dtype=float)
    shares = matrix / np.clip(matrix.sum(1, keepdims=True), 1, None)
    fig = Figure(figsize=(7, 6))
    ax = fig.subplots()
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for (row, col), share in np.ndenumerate(shares):
        ax.text(col, row, f"{share:.2f}", ha="center", va="center", color="white" if share > 0.5 else "black")
    ticks = np.arange(len(LABELS))
    ax.set(xticks=ticks, yticks=ticks, xticklabels=LABELS, yticklabels=LABELS, xlabel="predicted", ylabel="true")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="share of the true class")
    fig.tight_layout()
    return fig


def reliability_diagram(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray, float]], title: str, bins: int = 15
) -> Figure:
    """Accuracy against confidence per bin, one line per curve name (e.g. raw and temperature-scaled),
    each labelled with its ECE; a point's area is its bin's share of the sentences (ECE weighs bins so).
    `curves[name] = (confidence of the predicted label, correct, ece)`."""
    edges = np.linspace(0, 1, bins + 1)
    fig = Figure(figsize=(6, 6))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", label="perfect calibration")
    for name, (confidence, correct, ece) in curves.items():
        which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
        filled = [b for b in range(bins) if (which == b).any()]
        x = [confidence[which == b].mean() for b in filled]
        y = [correct[which == b].mean() for b in filled]
        (line,) = ax.plot(x, y, label=f"{name} (ECE {ece:.4f})")
        shares = np.array([(which == b).mean() for b in filled])
        ax.scatter(x, y, s=20 + 600 * shares, color=line.get_color(), alpha=0.7)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (probability of the predicted label)", ylabel="accuracy")
    ax.set_title(title)
    ax.legend(loc="upper left")
    fig.tight_layout()
    return fig


def attention_words(rows: Sequence[tuple[str, Sequence[str], Sequence[float]]], title: str) -> Figure:
    """Sentences as rows of words, each word shaded by the share of attention it received.
    `rows = [(row label, words, weights), ...]`; weights of a row sum to 1 over its words."""
    width = max(len(words) for _, words, _ in rows)
    shares = np.full((len(rows), width), np.nan)
    for row, (_, _, weights) in enumerate(rows):
        shares[row, : len(weights)] = weights
    fig = Figure(figsize=(min(24, max(8, 1.0 * width + 3)), 0.7 * len(rows) + 1.6))
    ax = fig.subplots()
    image = ax.imshow(shares, cmap="Reds", vmin=0, vmax=np.nanmax(shares), aspect="auto")
    top = np.nanmax(shares)
    for row, (_, words, weights) in enumerate(rows):
        for col, (word, weight) in enumerate(zip(words, weights)):
            ax.text(
                col, row, word, ha="center", va="center", fontsize=8, color="white" if weight > 0.6 * top else "black"
            )
    ax.set(xticks=[], yticks=np.arange(len(rows)), yticklabels=[label for label, _, _ in rows])
    ax.set(xlabel="words of the sentence, in order", ylabel="true -> predicted (probability)")
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, label="share of attention", fraction=0.03)
    fig.tight_layout()
    return fig


def f1_bars_runs(f1_by_run: Mapping[str, Mapping[str, float]], title: str) -> Figure:
    """Per-class F1 of several runs as grouped bars, one colour per run."""
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


def optimisation_history(
    values: Sequence[float | None], title: str, metric: str, pruned: Sequence[bool] = ()
) -> Figure:
    """A sweep's objective per trial (in launch order) and the best so far; trials without a result
    (None) are marked at the bottom, pruned ones (`pruned[i]`) apart from failed ones."""
    fig = Figure(figsize=(8, 4.5))
    ax = fig.subplots()
    done = [(i, v) for i, v in enumerate(values) if v is not None]
    if done:
        trials, scores = zip(*done)
        ax.scatter(trials, scores, label="trial", zorder=3)
        ax.step(trials, np.maximum.accumulate(scores), where="post", color="C1", label="best so far")
    low = min(scores) if done else 0.0
    stopped = [i for i, v in enumerate(values) if v is None and i < len(pruned) and pruned[i]]
    missing = [i for i, v in enumerate(values) if v is None and i not in stopped]
    if stopped:
        ax.scatter(stopped, [low] * len(stopped), marker="v", color="C2", label="pruned")
    if missing:
        ax.scatter(missing, [low] * len(missing), marker="x", color="grey", label="failed or unfinished")
    ax.set(xlabel="trial", ylabel=metric, title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def param_importances(importances: Mapping[str, float], title: str) -> Figure:
    """Hyperparameter importances as horizontal bars, most important on top."""
    names = list(importances)[::-1]
    fig = Figure(figsize=(8, 0.45 * len(names) + 1.5))
    ax = fig.subplots()
    bars = ax.barh(names, [importances[n] for n in names])
    ax.bar_label(bars, fmt="%.2f", fontsize=8)
    ax.set(xlabel="importance (normalised, sums to 1)", xlim=(0, 1.1), title=title)
    fig.tight_layout()
    return fig


def save(fig: Figure, path_without_suffix) -> list[str]:
    """Write `fig` as PNG and SVG; returns the paths."""
    paths = [f"{path_without_suffix}{suffix}" for suffix in (".png", ".svg")]
    for path in paths:
        fig.savefig(path, dpi=110)
    return paths
