"""RunFigures, ConfusionMatrixFigure and TestReport's calibration lines, on their own: no trainer, no
datamodule counts, a TensorBoard logger that only records."""

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from emotion_lab.callbacks.figures import ConfusionMatrixFigure, RunFigures
from emotion_lab.callbacks.reports import calibration_lines
from emotion_lab.labels import LABELS


def fake_trainer(metrics: dict, datamodule=None, loggers=()):
    return SimpleNamespace(
        callback_metrics={k: torch.tensor(v) for k, v in metrics.items()},
        loggers=list(loggers),
        is_global_zero=True,
        sanity_checking=False,
        datamodule=datamodule,
        global_step=0,
    )


class RecordingTensorBoard(TensorBoardLogger):
    """A TensorBoard logger that keeps the figures it is given, by tag, instead of writing them."""

    def __init__(self) -> None:
        self.figures = {}

    @property
    def experiment(self):
        return self

    def add_figure(self, tag, figure, global_step=None, close=True) -> None:
        self.figures[tag] = figure


def run_callback(tmp_path, temperature, datamodule=None):
    torch.manual_seed(0)
    logits, targets = torch.randn(60, 6) * 3, torch.arange(60) % 6
    metrics = {f"test_{kind}/{label}": 0.5 for kind in ("precision", "recall", "f1") for label in LABELS}
    metrics |= {"test/f1_weighted": 0.5, "test/ece": 0.2, "test/ece_calibrated": 0.1}
    callback = RunFigures(str(tmp_path), run_name="unit")
    trainer, module = fake_trainer(metrics, datamodule), SimpleNamespace(calibration_temperature=temperature)
    callback.on_test_epoch_start(trainer, module)
    for start in range(0, 60, 20):
        outputs = {"logits": logits[start : start + 20], "targets": targets[start : start + 20]}
        callback.on_test_batch_end(trainer, module, outputs, None, start // 20)
    callback.on_test_end(trainer, module)


def test_figures_without_tensorboard_or_split_counts(tmp_path):
    run_callback(tmp_path, temperature=0.8)
    written = {p.name for p in (tmp_path / "figures").iterdir()}
    expected = {"f1_by_class", "precision_recall_f1", "confusion_matrix", "reliability"}
    assert written == {f"{name}.{suffix}" for name in expected for suffix in ("png", "svg")}


def test_attention_sentences_are_one_per_emotion_at_most(tmp_path):
    from emotion_lab.errors import ConfigError

    for bad in (-1, 7):
        with pytest.raises(ConfigError, match=f"attention_sentences={bad}: allowed 0 to 6"):
            RunFigures(str(tmp_path), attention_sentences=bad)
    # 0: neither word figure, even for a network that has attention and a fast tokenizer.
    datamodule = SimpleNamespace(tokenizer=SimpleNamespace(is_fast=True), eval_examples=lambda split: [])
    module = SimpleNamespace(net=SimpleNamespace(attention=object()))
    assert (
        RunFigures(str(tmp_path), attention_sentences=0)._word_figures(fake_trainer({}, datamodule), module, "x") == {}
    )


# Three test sentences whose probabilities are known by hand: softmax([ln a, 0, 0, 0, 0, 0]) gives the
# top class a / (a + 5), and dividing the logits by 0.5 squares a. Targets: right, wrong, right.
HAND_LOGITS = torch.zeros(3, 6)
HAND_LOGITS[0, 0], HAND_LOGITS[1, 1], HAND_LOGITS[2, 5] = math.log(3), math.log(5), math.log(2)
HAND_TARGETS = torch.tensor([0, 2, 5])
RAW_POINTS = [(2 / 7, 1.0), (3 / 8, 1.0), (5 / 10, 0.0)]  # (confidence, correct), each alone in its 1/15 bin
SCALED_POINTS = [(4 / 9, 1.0), (9 / 14, 1.0), (25 / 30, 0.0)]  # temperature 0.5


def flat(points) -> list[float]:
    return [float(v) for point in points for v in point]


def saved_figures(monkeypatch) -> dict:
    """The figures `figures.save` is given from now on, by file name: filled as they are saved."""
    from emotion_lab.reporting import figures

    drawn = {}
    save = figures.save
    monkeypatch.setattr(figures, "save", lambda fig, path: drawn.setdefault(Path(path).name, fig) and save(fig, path))
    return drawn


def run_on_hand_sentences(tmp_path, trainer, temperature) -> None:
    """Runs RunFigures over the hand-built sentences in two batches."""
    callback = RunFigures(str(tmp_path), run_name="unit")
    module = SimpleNamespace(calibration_temperature=temperature)
    callback.on_test_epoch_start(trainer, module)
    for batch, rows in enumerate((slice(0, 2), slice(2, 3))):
        callback.on_test_batch_end(
            trainer, module, {"logits": HAND_LOGITS[rows], "targets": HAND_TARGETS[rows]}, None, batch
        )
    callback.on_test_end(trainer, module)


def drawn_reliability(tmp_path, monkeypatch, temperature, metrics):
    """The reliability figure RunFigures draws over the hand-built sentences, as its curves:
    {legend label: its sorted (x, y) points, flattened}."""
    drawn = saved_figures(monkeypatch)
    run_on_hand_sentences(tmp_path, fake_trainer(metrics), temperature)
    ax = drawn["reliability"].axes[0]
    return {
        line.get_label(): flat(sorted(zip(line.get_xdata(), line.get_ydata())))
        for line in ax.lines
        if line.get_label() != "Perfectly calibrated"
    }


def test_the_reliability_diagram_plots_each_sentences_confidence_raw_and_scaled(tmp_path, monkeypatch):
    curves = drawn_reliability(tmp_path, monkeypatch, 0.5, {"test/ece": 0.25, "test/ece_calibrated": 0.125})
    assert list(curves) == ["raw (ECE 0.2500)", "temperature 0.50 (ECE 0.1250)"]  # each curve with its own ECE
    assert curves["raw (ECE 0.2500)"] == pytest.approx(flat(RAW_POINTS))
    assert curves["temperature 0.50 (ECE 0.1250)"] == pytest.approx(flat(SCALED_POINTS))


@pytest.mark.parametrize("temperature", [None, 1.0])
def test_without_a_fitted_temperature_only_the_raw_curve_is_drawn(tmp_path, monkeypatch, temperature):
    curves = drawn_reliability(tmp_path, monkeypatch, temperature, {"test/ece": 0.25})
    assert curves == {"raw (ECE 0.2500)": pytest.approx(flat(RAW_POINTS))}


def cells(fig) -> dict[tuple[int, int], str]:
    """A confusion-matrix figure's cell texts by (column, row)."""
    return {tuple(int(round(v)) for v in t.get_position()): t.get_text() for t in fig.axes[0].texts}


def test_tensorboard_gets_the_same_confusion_matrix_as_the_saved_file(tmp_path, monkeypatch):
    drawn, tensorboard = saved_figures(monkeypatch), RecordingTensorBoard()
    trainer, module = fake_trainer({}, loggers=[tensorboard]), SimpleNamespace()
    matrix = ConfusionMatrixFigure()
    for batch, rows in enumerate((slice(0, 2), slice(2, 3))):
        outputs = {"preds": HAND_LOGITS[rows].argmax(-1), "targets": HAND_TARGETS[rows]}
        matrix.on_test_batch_end(trainer, module, outputs, None, batch)
    matrix.on_test_epoch_end(trainer, module)
    run_on_hand_sentences(tmp_path, trainer, None)
    shown, saved = tensorboard.figures["test/confusion_matrix"], drawn["confusion_matrix"]
    # Shares of each true class: sadness right, love taken for joy, surprise right.
    expected = {(col, row): "0.00" for col in range(6) for row in range(6)}
    expected |= {(0, 0): "1.00", (1, 2): "1.00", (5, 5): "1.00"}
    assert cells(shown) == cells(saved) == expected
    for fig in (shown, saved):
        ax = fig.axes[0]
        assert [t.get_text() for t in ax.get_yticklabels()] == list(LABELS) and ax.get_ylabel() == "true"
    assert "test_figures/confusion_matrix" not in tensorboard.figures  # once in TensorBoard, not twice


def test_the_test_report_gives_the_calibration_of_the_test_predictions(tmp_path):
    from emotion_lab.callbacks.reports import TestReport
    from emotion_lab.models.calibration import calibration_scores

    # What the classifier logs at the test's end, from the same logits.
    logged = {f"test/{k}": torch.tensor(v) for k, v in calibration_scores(HAND_LOGITS, HAND_TARGETS).items()}
    scaled = calibration_scores(HAND_LOGITS, HAND_TARGETS, 0.5)
    logged |= {f"test/{k}_calibrated": torch.tensor(v) for k, v in scaled.items()}
    trainer = SimpleNamespace(callback_metrics=logged, is_global_zero=True, datamodule=None, world_size=1)
    module = SimpleNamespace(calibration_temperature=0.5)
    report = TestReport(str(tmp_path))
    report.on_test_epoch_start(trainer, module)
    outputs = {"preds": HAND_LOGITS.argmax(-1), "targets": HAND_TARGETS, "logits": HAND_LOGITS}
    report.on_test_batch_end(trainer, module, outputs, None, 0)
    report.on_test_end(trainer, module)

    # By hand: NLL is the mean of -ln p(target); each sentence has its own ECE bin, so ECE is the mean
    # of |correct - confidence|.
    nll = -(math.log(3 / 8) + math.log(1 / 10) + math.log(2 / 7)) / 3
    nll_scaled = -(math.log(9 / 14) + math.log(1 / 30) + math.log(4 / 9)) / 3
    ece = sum(abs(c - p) for p, c in RAW_POINTS) / 3
    ece_scaled = sum(abs(c - p) for p, c in SCALED_POINTS) / 3
    calibration = json.loads((tmp_path / "test_report.json").read_text())["calibration"]
    assert calibration == pytest.approx(
        {"nll": nll, "ece": ece, "nll_calibrated": nll_scaled, "ece_calibrated": ece_scaled, "temperature": 0.5},
        abs=1e-6,
    )
    text = (tmp_path / "test_report.txt").read_text()
    assert f"nll_calibrated {nll_scaled:.4f}" in text and f"ece {ece:.4f}" in text


def test_no_calibration_section_when_none_was_logged(tmp_path):
    assert calibration_lines({"test/f1_weighted": torch.tensor(0.9)}, 0.9) == {}
