"""Each figure draws the numbers it is given, saves as a real PNG + SVG, and is not blank; the ones a
library draws (scikit-learn's confusion matrix and reliability, Optuna's sweep plots) show our labels."""

import warnings

import matplotlib
import matplotlib.image
import numpy as np
import optuna
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


def study_of(values, params):
    """An in-memory maximised study: trial i has values[i] (None: failed) and params[i]."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    distributions = {
        "lr": optuna.distributions.FloatDistribution(0, 1),
        "seed": optuna.distributions.FloatDistribution(0, 9),
    }
    for i, value in enumerate(values):
        if value is None:
            study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))
        else:
            study.add_trial(optuna.trial.create_trial(params=params[i], distributions=distributions, value=value))
    return study


SWEEP = [0.80, 0.85, None, 0.82, 0.90]
PARAMS = [{"lr": 0.1 * i, "seed": float(i % 3)} for i in range(len(SWEEP))]


def test_every_figure_saves_a_readable_png(tmp_path):
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.2, 1.0, 500)
    correct = (rng.uniform(size=500) < confidence).astype(float)
    drawn = {
        "pies": figures.class_pies({"train": [10, 20, 5, 8, 7, 3], "test": [5, 9, 2, 4, 3, 1]}, "pies"),
        "lines": figures.precision_recall_f1_lines({"precision": F1, "recall": F1, "f1": F1}, "lines"),
        "matrix": figures.confusion_heatmap(np.diag([50, 40, 30, 20, 10, 5]) + 1, "matrix"),
        "reliability": figures.reliability_diagram({"raw": (confidence, correct, 0.05)}, "reliability"),
        "history": figures.optimisation_history(study_of(SWEEP, PARAMS), "history", "val/f1"),
        "importances": figures.param_importances(study_of(SWEEP, PARAMS), "importances"),
    }
    for name, fig in drawn.items():
        assert_real_png(figures.save(fig, tmp_path / name)[0])


def test_the_confusion_matrix_shows_each_true_class_shares_under_the_emotions():
    matrix = np.array([[8, 2, 0, 0, 0, 0]] + [[0] * i + [5] + [0] * (5 - i) for i in range(1, 6)])
    ax = figures.confusion_heatmap(matrix, "m").axes[0]
    cells = {tuple(np.round(t.get_position()).astype(int)): t.get_text() for t in ax.texts}
    assert cells[(0, 0)] == "0.80" and cells[(1, 0)] == "0.20" and cells[(0, 1)] == "0.00"  # (column, row): rows true
    assert [t.get_text() for t in ax.get_xticklabels()] == list(LABELS)
    assert [t.get_text() for t in ax.get_yticklabels()] == list(LABELS)
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == ("predicted", "true", "m")


def test_word_figures_shade_words_on_their_scale():
    rows = [("joy -> joy (0.90)", ["so", "happy"], [0.25, 0.75]), ("fear -> fear (0.60)", ["dark"], [1.0])]
    image = figures.attention_words(rows, "a").axes[0].images[0]
    assert image.get_clim() == (0.0, 1.0) and image.get_cmap().name == "Reds"
    assert np.allclose(image.get_array().filled(np.nan)[0], [0.25, 0.75])
    scores = [("joy -> joy (0.90)", ["not", "happy", "at", "all"], [-0.2, 0.5, 0.0, 0.1])]
    ax = figures.attribution_words(scores, "b").axes[0]
    image = ax.images[0]
    # One scale centred on 0, in the page's colours: for the label blue, against it orange, 0 white.
    assert image.get_clim() == (-0.5, 0.5)
    assert [t.get_text() for t in ax.texts] == ["not", "happy", "at", "all"]
    colours = image.to_rgba(np.array([-0.2, 0.5, 0.0]))
    assert colours[0, 0] > colours[0, 2] and colours[1, 2] > colours[1, 0]
    assert np.allclose(colours[1, :3], [96 / 255, 165 / 255, 250 / 255], atol=0.01)  # the page's blue, at the top
    assert np.allclose(colours[2, :3], [1, 1, 1], atol=0.01)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["joy -> joy (0.90)"]


def test_the_reliability_diagram_puts_each_bin_at_its_accuracy():
    confidence = np.array([0.95] * 10 + [0.55] * 10)
    correct = np.array([1.0] * 9 + [0.0] + [1.0] * 5 + [0.0] * 5)
    fig = figures.reliability_diagram({"raw": (confidence, correct, 0.025)}, "r")
    line = [ln for ln in fig.axes[0].lines if ln.get_label().startswith("raw")][0]
    assert line.get_label() == "raw (ECE 0.0250)"
    points = sorted(zip(line.get_xdata(), line.get_ydata()))
    assert np.allclose(points, [(0.55, 0.5), (0.95, 0.9)])
    (counts,) = fig.axes[1].patches  # the bins' sentences below: 10 in each of the two filled bins
    heights = counts.get_xy()[:, 1]
    assert heights.max() == 10 and sorted(set(heights)) == [0, 10]


def test_the_sweep_figures_are_optunas_and_leave_pyplot_as_it_was():
    style = dict(matplotlib.rcParams)
    with warnings.catch_warnings():
        warnings.simplefilter("error", optuna.exceptions.ExperimentalWarning)
        history = figures.optimisation_history(study_of(SWEEP, PARAMS), "sweep: per trial", "val/f1")
        study = study_of(SWEEP, PARAMS)
        evaluator = optuna.importance.MeanDecreaseImpurityImportanceEvaluator(seed=0)
        bars = figures.param_importances(study, "sweep: importances", evaluator)
    ax = history.axes[0]
    (points,) = [c for c in ax.collections if len(c.get_offsets())]
    assert [tuple(p) for p in points.get_offsets()] == [(0, 0.80), (1, 0.85), (3, 0.82), (4, 0.90)]  # complete only
    best = [ln for ln in ax.lines if ln.get_label() == "Best Value"][0]
    assert list(zip(best.get_xdata(), best.get_ydata())) == [(0, 0.80), (1, 0.85), (2, 0.85), (3, 0.85), (4, 0.90)]
    assert ax.get_title() == "sweep: per trial" and ax.get_ylabel() == "val/f1"
    expected = optuna.importance.get_param_importances(study, evaluator=evaluator)
    ax = bars.axes[0]
    shown = {t.get_text(): bar.get_width() for t, bar in zip(ax.get_yticklabels(), ax.patches)}
    assert shown == pytest.approx(dict(expected)) and ax.get_title() == "sweep: importances"
    assert dict(matplotlib.rcParams) == style  # Optuna's ggplot style stayed inside the figures
    import matplotlib.pyplot as plt

    assert plt.get_fignums() == []  # nothing left open in pyplot
