"""The test report: per-class precision, recall and F1 written into the run folder."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import torch
from sklearn.metrics import classification_report

from emotion_lab.labels import LABELS
from emotion_lab.reporting.errors import confident_mistakes, confusion_lines, costly_confusions, write_errors_csv
from emotion_lab.utils.atomic import write_text


class TestOutputs(L.Callback):
    """Base of the callbacks that read the test's predictions: collects each batch's `preds`, `targets`
    and, when the module returns them, `logits`."""

    def __init__(self) -> None:
        self._batches: list[dict[str, torch.Tensor]] = []

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._batches = []

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._batches.append({k: outputs[k].detach().cpu() for k in ("preds", "targets", "logits") if k in outputs})

    def collected(self, key: str) -> torch.Tensor | None:
        """`key` over the whole test, or None when some batch lacked it (a module of your own may not
        return logits)."""
        parts = [batch[key] for batch in self._batches if key in batch]
        if not parts or len(parts) < len(self._batches):
            return None
        return torch.cat(parts).float() if key == "logits" else torch.cat(parts)


class TestReport(TestOutputs):
    """Collects test predictions and writes into `output_dir`: `test_report.txt` (the usual
    classification-report layout, then calibration, then the confusions that cost the most F1, with
    examples), `test_report.json` (the same), and `errors.csv` (the most confident mistakes per true
    class, with their probability after temperature scaling)."""

    def __init__(self, output_dir: str, digits: int = 4) -> None:
        super().__init__()
        self.output_dir = Path(output_dir)
        self.digits = digits

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # At the end, not the epoch's end: the module logs its calibration scores after the callbacks' epoch end.
        if not self._batches or not trainer.is_global_zero:
            return
        preds, targets = self.collected("preds").numpy(), self.collected("targets").numpy()
        kwargs = {"labels": list(range(len(LABELS))), "target_names": list(LABELS), "zero_division": 0}
        self.output_dir.mkdir(parents=True, exist_ok=True)
        report = classification_report(targets, preds, output_dict=True, **kwargs)
        text = classification_report(targets, preds, digits=self.digits, **kwargs)
        temperature = getattr(pl_module, "calibration_temperature", None) or 1.0
        calibration = calibration_lines(trainer.callback_metrics, temperature)
        if calibration:
            report["calibration"] = calibration
            text += "\n" + "\n".join(f"{name:>28} {value:.{self.digits}f}" for name, value in calibration.items())
            text += "\n"
        texts = self._texts(trainer, targets)
        logits = self.collected("logits")
        if texts is not None and logits is not None and torch.isfinite(logits).all():
            report["costly_confusions"] = costly_confusions(texts, targets, preds)
            text += "\n" + confusion_lines(report["costly_confusions"])
            rows = confident_mistakes(texts, targets, (logits / temperature).softmax(-1).numpy())
            write_errors_csv(rows, self.output_dir / "errors.csv")
        write_text(self.output_dir / "test_report.txt", text)
        write_text(self.output_dir / "test_report.json", json.dumps(report, indent=2))

    @staticmethod
    def _texts(trainer: L.Trainer, targets) -> list[str] | None:
        """The test sentences in the order the predictions came: only when the datamodule can say, and its
        labels in that order are the targets the test saw (not a shard, a partial test, or another order)."""
        datamodule = getattr(trainer, "datamodule", None)
        if not hasattr(datamodule, "eval_examples") or getattr(trainer, "world_size", 1) > 1:
            return None
        examples = datamodule.eval_examples("test")
        if [label for _, label in examples] != targets.tolist():
            return None
        return [text for text, _ in examples]


def calibration_lines(metrics: dict, temperature: float) -> dict[str, float]:
    """The test's calibration scores, raw and after temperature scaling (empty when none were logged)."""
    names = ("nll", "ece", "nll_calibrated", "ece_calibrated")
    found = {name: float(metrics[f"test/{name}"]) for name in names if f"test/{name}" in metrics}
    return {**found, "temperature": float(temperature)} if found else {}
