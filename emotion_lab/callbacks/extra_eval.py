"""Scores the evaluation-only sets of `data.extra_eval` (text in another style: never trained on, never
used to select a checkpoint) with the weights the test just scored."""

from __future__ import annotations

import lightning as L
import torch
from torchmetrics.functional.classification import multiclass_f1_score, multiclass_recall

from emotion_lab.labels import LABELS, NUM_CLASSES


class ExtraEvaluation(L.Callback):
    """After the test, logs `extra/<set>/f1_weighted`, `extra/<set>/f1_macro` and `extra/<set>/recall_<label>`
    for each loader of the DataModule's `extra_eval_dataloaders()` (to the loggers and metrics.json)."""

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.datamodule is None:
            return
        for name, loader in trainer.datamodule.extra_eval_dataloaders().items():
            preds, targets = [], []
            for batch in loader:
                with trainer.precision_plugin.test_step_context():  # the test's precision (bf16 autocast or not)
                    logits = pl_module(
                        batch["input_ids"].to(pl_module.device), batch["attention_mask"].to(pl_module.device)
                    )
                preds.append(logits.argmax(-1).cpu())
                targets.append(batch["labels"])
            pred, target = torch.cat(preds), torch.cat(targets)
            scores = {
                f"extra/{name}/f1_weighted": multiclass_f1_score(pred, target, NUM_CLASSES, average="weighted"),
                f"extra/{name}/f1_macro": multiclass_f1_score(pred, target, NUM_CLASSES, average="macro"),
            }
            recall = multiclass_recall(pred, target, NUM_CLASSES, average="none")
            scores |= {f"extra/{name}/recall_{label}": value for label, value in zip(LABELS, recall)}
            pl_module.log_dict(scores, sync_dist=True)  # every process scored the whole set: the mean is the value
