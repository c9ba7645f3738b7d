"""Figures: into TensorBoard's IMAGES tab during training, and into the run folder after the test."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from sklearn.metrics import confusion_matrix
from torchmetrics.classification import MulticlassConfusionMatrix

from emotion_lab.callbacks.reports import TestOutputs
from emotion_lab.errors import ConfigError
from emotion_lab.inference.predictor import EmotionPredictor
from emotion_lab.labels import LABELS
from emotion_lab.reporting import figures


class ConfusionMatrixFigure(L.Callback):
    """Draws the confusion matrix (shares of each true emotion, by row) into TensorBoard's IMAGES tab after each
    validation epoch and the test, as RunFigures draws the saved one: a 2-D tensor cannot go there as a scalar."""

    def __init__(self) -> None:
        self.matrix = MulticlassConfusionMatrix(len(LABELS))

    def _update(self, outputs) -> None:
        if outputs is not None:
            self.matrix.update(outputs["preds"].cpu(), outputs["targets"].cpu())

    def _draw(self, trainer: L.Trainer, stage: str) -> None:
        loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        if loggers and not trainer.sanity_checking and trainer.is_global_zero and self.matrix.update_count:
            fig = figures.confusion_heatmap(self.matrix.compute().numpy(), f"{stage} confusion matrix (rows: true)")
            for logger in loggers:
                logger.experiment.add_figure(f"{stage}/confusion_matrix", fig, global_step=trainer.global_step)
        self.matrix.reset()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._update(outputs)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._draw(trainer, "val")

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._update(outputs)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._draw(trainer, "test")


class RunFigures(TestOutputs):
    """After the test, writes the run's figures to `<output_dir>/figures/` (PNG and SVG) and to
    TensorBoard (`test_figures/...`): per-class F1 beside the reference build's, the class
    distribution of each split, precision / recall / F1 per class, the confusion matrix (file only:
    `ConfusionMatrixFigure` puts the same drawing in TensorBoard), a reliability diagram before and after
    temperature scaling. Beside `figures/`, because they quote test sentences (as `errors.csv` does, so
    that `figures/` can be published whole), two figures of the same test sentences, one per emotion
    (`attention_sentences`, 0 = neither): `attention_words.{png,svg}`, the attention over their words (none
    for networks without attention), and its twin `attribution_words.{png,svg}`, each word's integrated-
    gradients attribution to the predicted label (`inference.explain`). Both need a fast tokenizer."""

    def __init__(self, output_dir: str, run_name: str = "", attention_sentences: int = len(LABELS)) -> None:
        super().__init__()
        if not 0 <= attention_sentences <= len(LABELS):
            raise ConfigError(
                f"callbacks.run_figures.attention_sentences={attention_sentences}: allowed 0 to {len(LABELS)} "
                "(one sentence per emotion)"
            )
        self.output_dir = Path(output_dir)
        self.run_name = run_name
        self.attention_sentences = attention_sentences

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logits, targets = self.collected("logits"), self.collected("targets")
        if logits is None or not trainer.is_global_zero:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        name = self.run_name or self.output_dir.name
        headline = f"test weighted F1 {metrics.get('test/f1_weighted', float('nan')):.4f}"
        per_class = {
            kind: {label: metrics.get(f"test_{kind}/{label}", float("nan")) for label in LABELS}
            for kind in ("precision", "recall", "f1")
        }
        drawn = {
            "f1_by_class": figures.f1_bars(per_class["f1"], f"{name}: F1 by emotion ({headline})"),
            "precision_recall_f1": figures.precision_recall_f1_lines(per_class, f"{name}: per-class scores"),
            "reliability": figures.reliability_diagram(
                self._reliability(logits, targets, metrics, getattr(pl_module, "calibration_temperature", None)),
                f"{name}: test reliability",
            ),
        }
        counts = trainer.datamodule.split_counts if trainer.datamodule is not None else None
        if counts:
            drawn["class_distribution"] = figures.class_pies(counts, f"{name}: emotions per split")
        folder = self.output_dir / "figures"
        folder.mkdir(parents=True, exist_ok=True)
        for logger in [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]:
            for key, fig in drawn.items():
                logger.experiment.add_figure(f"test_figures/{key}", fig, global_step=trainer.global_step, close=False)
        matrix = confusion_matrix(targets.numpy(), logits.argmax(-1).numpy(), labels=list(range(len(LABELS))))
        drawn["confusion_matrix"] = figures.confusion_heatmap(matrix, f"{name}: test confusion matrix (rows: true)")
        for key, fig in drawn.items():
            figures.save(fig, folder / key)
        # Last: the figures above are saved whatever happens to these.
        for key, fig in self._word_figures(trainer, pl_module, name).items():
            figures.save(fig, self.output_dir / key)
            for logger in [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]:
                logger.experiment.add_figure(f"test_figures/{key}", fig, global_step=trainer.global_step)

    def _word_figures(self, trainer: L.Trainer, pl_module: L.LightningModule, name: str) -> dict:
        """The attention over the words of test sentences and the words' attributions, for one sentence per
        true emotion of about 12 words (a sentence typical of the data, not its shortest); none without a
        fast tokenizer (its word boundaries group the word-pieces)."""
        datamodule = trainer.datamodule
        net = getattr(pl_module, "net", None)
        if not self.attention_sentences or net is None or datamodule is None:
            return {}
        if not getattr(datamodule.tokenizer, "is_fast", False):
            return {}
        chosen: dict[int, str] = {}
        for text, label in sorted(datamodule.eval_examples("test"), key=lambda ex: abs(len(ex[0].split()) - 12)):
            chosen.setdefault(label, text)
        texts = [chosen[label] for label in sorted(chosen)][: self.attention_sentences]
        truth = [LABELS[label] for label in sorted(chosen)]
        predictor = EmotionPredictor(
            net,
            datamodule.tokenizer,
            max_length=datamodule.max_length,
            temperature=pl_module.calibration_temperature or 1.0,
        )
        drawn = {}
        was_training = net.training
        try:
            if getattr(net, "attention", None) is not None:
                attention = predictor.word_attention(texts)
                rows = [(f"{t} -> {a.label} ({a.prob:.2f})", a.words, a.weights) for t, a in zip(truth, attention)]
                special = sum(a.special_share for a in attention) / len(attention)
                drawn["attention_words"] = figures.attention_words(
                    rows, f"{name}: attention over words (special tokens got {special:.0%} of it, left out)"
                )
            explained = predictor.explain(texts)
        finally:
            net.train(was_training)
        rows = [
            (f"{t} -> {e.label} ({e.prob:.2f})", [w.text for w in e.words], [w.score for w in e.words])
            for t, e in zip(truth, explained)
        ]
        drawn["attribution_words"] = figures.attribution_words(
            rows, f"{name}: integrated-gradients attribution of each word to the predicted label"
        )
        return drawn

    @staticmethod
    def _reliability(logits: torch.Tensor, targets: torch.Tensor, metrics: dict, temperature: float | None) -> dict:
        """Curves for the reliability diagram: raw, and temperature-scaled when a temperature was fitted."""
        curves = {}
        scaled = [("raw", 1.0, "test/ece")]
        if temperature is not None and temperature != 1.0:
            scaled.append((f"temperature {temperature:.2f}", temperature, "test/ece_calibrated"))
        for curve, t, ece in scaled:
            confidence, predicted = (logits / t).softmax(-1).max(-1)
            correct = (predicted == targets).float().numpy()
            curves[curve] = (confidence.numpy(), correct, metrics.get(ece, float("nan")))
        return curves
