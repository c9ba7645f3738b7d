"""TestReport's errors.csv: written only when the sentences provably match the predictions."""

from types import SimpleNamespace

import torch

from emotion_lab.callbacks.reports import TestReport

TEXTS = [f"sentence {i}" for i in range(12)]
TARGETS = torch.arange(12) % 6


class Examples:
    def __init__(self, labels):
        self.labels = labels

    def eval_examples(self, split):
        return list(zip(TEXTS, self.labels))


def run(tmp_path, datamodule, with_logits=True):
    torch.manual_seed(0)
    logits = torch.randn(12, 6)
    trainer = SimpleNamespace(callback_metrics={}, is_global_zero=True, datamodule=datamodule, world_size=1)
    module = SimpleNamespace(calibration_temperature=None)
    report = TestReport(str(tmp_path))
    report.on_test_epoch_start(trainer, module)
    for start in (0, 6):
        outputs = {"preds": logits[start : start + 6].argmax(-1), "targets": TARGETS[start : start + 6]}
        if with_logits:
            outputs["logits"] = logits[start : start + 6]
        report.on_test_batch_end(trainer, module, outputs, None, start)
    report.on_test_end(trainer, module)
    return (tmp_path / "errors.csv"), (tmp_path / "test_report.txt").read_text()


def test_errors_written_when_the_labels_match_the_targets(tmp_path):
    errors, report = run(tmp_path, Examples(TARGETS.tolist()))
    assert errors.is_file() and "confusions that cost the most weighted F1" in report
    assert "sentence" in errors.read_text()


def test_no_errors_when_the_sentences_cannot_be_matched(tmp_path):
    shuffled = TARGETS.roll(1).tolist()  # another order than the test's
    for datamodule, logits, name in ((Examples(shuffled), True, "a"), (object(), True, "b"), (None, False, "c")):
        folder = tmp_path / name
        errors, report = run(folder, datamodule if datamodule is not None else Examples(TARGETS.tolist()), logits)
        assert not errors.exists() and "weighted avg" in report and "confusions" not in report
