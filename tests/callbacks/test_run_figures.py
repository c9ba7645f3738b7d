"""RunFigures and TestReport's calibration lines, on their own: no TensorBoard, no datamodule counts."""

from types import SimpleNamespace

import pytest
import torch

from emotion_lab.callbacks.figures import RunFigures
from emotion_lab.callbacks.reports import calibration_lines
from emotion_lab.data.labels import LABELS


def fake_trainer(metrics: dict, datamodule=None):
    return SimpleNamespace(
        callback_metrics={k: torch.tensor(v) for k, v in metrics.items()},
        loggers=[],
        is_global_zero=True,
        datamodule=datamodule,
        global_step=0,
    )


def run_callback(tmp_path, temperature, datamodule=None):
    torch.manual_seed(0)
    logits, targets = torch.randn(60, 6) * 3, torch.arange(60) % 6
    metrics = {f"test_{kind}/{label}": 0.5 for kind in ("precision", "recall", "f1") for label in LABELS}
    metrics |= {"test/f1_weighted": 0.5, "test/ece": 0.2, "test/ece_calibrated": 0.1}
    callback = RunFigures(str(tmp_path), run_name="unit")
    trainer, module = fake_trainer(metrics, datamodule), SimpleNamespace(temperature=temperature)
    callback.on_test_epoch_start(trainer, module)
    for start in range(0, 60, 20):
        outputs = {"logits": logits[start : start + 20], "targets": targets[start : start + 20]}
        callback.on_test_batch_end(trainer, module, outputs, None, start // 20)
    callback.on_test_end(trainer, module)
    return callback, logits, targets, metrics


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
    # 0: no attention figure, even for a network that has attention and a fast tokenizer.
    datamodule = SimpleNamespace(tokenizer=SimpleNamespace(is_fast=True), eval_examples=lambda split: [])
    module = SimpleNamespace(net=SimpleNamespace(attention=object()))
    assert (
        RunFigures(str(tmp_path), attention_sentences=0)._attention(fake_trainer({}, datamodule), module, "x") is None
    )


def test_reliability_shows_the_scaled_curve_only_when_there_is_a_temperature(tmp_path):
    callback, logits, targets, metrics = run_callback(tmp_path, temperature=None)
    assert list(callback._reliability(logits, targets, metrics, None)) == ["raw"]
    curves = callback._reliability(logits, targets, metrics, 0.8)
    assert list(curves) == ["raw", "temperature 0.80"]
    assert (curves["raw"][2], curves["temperature 0.80"][2]) == pytest.approx((0.2, 0.1))  # the logged ECEs
    confidence, correct, _ = curves["temperature 0.80"]
    assert confidence.tolist() == (logits / 0.8).softmax(-1).max(-1).values.tolist()
    assert correct.tolist() == (logits.argmax(-1) == targets).float().tolist()


def test_calibration_lines_report_what_was_logged():
    logged = {"test/nll": torch.tensor(0.5), "test/ece": torch.tensor(0.1), "test/nll_calibrated": torch.tensor(0.4)}
    assert calibration_lines(logged, 0.9) == {
        "nll": 0.5,
        "ece": pytest.approx(0.1),
        "nll_calibrated": pytest.approx(0.4),
        "temperature": 0.9,
    }
    assert calibration_lines({"test/f1_weighted": torch.tensor(0.9)}, 0.9) == {}
