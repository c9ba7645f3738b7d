"""Each figure draws the numbers it is given, saves as a real PNG + SVG, and is not blank."""

import matplotlib.image
import numpy as np
import pytest

from emotion_lab.labels import LABELS
from emotion_lab.reporting import figures

F1 = dict(zip(LABELS, [0.97, 0.95, 0.81, 0.93, 0.90, 0.73]))


def assert_real_png(path: str) -> None:
    with open(path, "rb") as file:
        assert file.read(8) == b"\x89PNG\r\n\x1a\n"
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[0] > 200 and pixels.shape[1] > 200
    assert pixels[..., :3].std() > 0.05  # not a blank canvas


def test_f1_bars_are_the_scores_beside_the_reference(tmp_path):
    fig = figures.f1_bars(F1, "run: F1 by emotion")
    ax = fig.axes[0]
    ours, theirs = ax.containers
    assert [bar.get_height() for bar in ours] == pytest.approx([F1[label] for label in LABELS])
    assert [bar.get_height() for bar in theirs] == pytest.approx([figures.REFERENCE_F1[label] for label in LABELS])
    assert [t.get_text() for t in ax.get_xticklabels()] == list(LABELS) and ax.get_title() == "run: F1 by emotion"
    png, svg = figures.save(fig, tmp_path / "f1")
    assert_real_png(png) and svg.endswith(".svg")
    assert "<svg" in open(svg).read(2000)


def test_every_figure_saves_a_readable_png(tmp_path):
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.2, 1.0, 500)
    correct = (rng.uniform(size=500) < confidence).astype(float)
    drawn = {
        "pies": figures.class_pies({"train": [10, 20, 5, 8, 7, 3], "test": [5, 9, 2, 4, 3, 1]}, "pies"),
        "lines": figures.precision_recall_f1_lines({"precision": F1, "recall": F1, "f1": F1}, "lines"),
        "matrix": figures.confusion_heatmap(np.diag([50, 40, 30, 20, 10, 5]) + 1, "matrix"),
        "reliability": figures.reliability_diagram({"raw": (confidence, correct, 0.05)}, "reliability"),
    }
    for name, fig in drawn.items():
        assert_real_png(figures.save(fig, tmp_path / name)[0])


def test_the_confusion_heatmap_shows_shares_of_the_true_class():
    matrix = np.array([[8, 2, 0, 0, 0, 0]] + [[0] * i + [5] + [0] * (5 - i) for i in range(1, 6)])
    fig = figures.confusion_heatmap(matrix, "m")
    cells = {t.get_text() for t in fig.axes[0].texts}
    assert {"0.80", "0.20", "1.00"} <= cells


def test_the_reliability_diagram_puts_each_bin_at_its_accuracy():
    confidence = np.array([0.95] * 10 + [0.55] * 10)
    correct = np.array([1.0] * 9 + [0.0] + [1.0] * 5 + [0.0] * 5)
    fig = figures.reliability_diagram({"raw": (confidence, correct, 0.025)}, "r")
    line = [ln for ln in fig.axes[0].lines if ln.get_label().startswith("raw")][0]
    assert line.get_label() == "raw (ECE 0.0250)"
    points = sorted(zip(line.get_xdata(), line.get_ydata()))
    assert np.allclose(points, [(0.55, 0.5), (0.95, 0.9)])
