"""Figures for TensorBoard's IMAGES tab."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger
from torchmetrics.classification import MulticlassConfusionMatrix

from emotion_lab.data.labels import LABELS


class ConfusionMatrixFigure(L.Callback):
    """Draws the row-normalised confusion matrix (recall on the diagonal) into TensorBoard's IMAGES
    tab after each validation epoch and the test: a 2-D tensor cannot go there as a scalar."""

    def __init__(self) -> None:
        self.matrix = MulticlassConfusionMatrix(len(LABELS), normalize="true")

    def _update(self, outputs) -> None:
        if outputs is not None:
            self.matrix.update(outputs["preds"].cpu(), outputs["targets"].cpu())

    def _draw(self, trainer: L.Trainer, stage: str) -> None:
        loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        if loggers and not trainer.sanity_checking and trainer.is_global_zero and self.matrix.update_count:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            fig, ax = self.matrix.plot(labels=list(LABELS))
            ax.set_title(f"{stage} confusion matrix (rows: true, normalised)")
            fig.set_size_inches(7, 6)
            for logger in loggers:
                logger.experiment.add_figure(f"{stage}/confusion_matrix", fig, global_step=trainer.global_step)
            plt.close(fig)
        self.matrix.reset()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._update(outputs)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._draw(trainer, "val")

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._update(outputs)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._draw(trainer, "test")
