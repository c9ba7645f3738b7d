"""Pruning of sweep trials: validation scores go to the Optuna study several times an epoch, and its
pruner may stop the trial at any of them but the last."""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import optuna
import torch
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.trainer.states import TrainerFn
from torchmetrics.functional.classification import multiclass_f1_score

from emotion_lab.labels import NUM_CLASSES
from emotion_lab.sweeps.study import trial_in_this_job

log = logging.getLogger(__name__)


class OptunaPruning(L.Callback):
    """Reports a trial of `hparams_search=optuna` to its study `reports_per_epoch` times an epoch; inert
    in any other run.

    Step `epoch * reports_per_epoch + k` is the weighted F1 after (k + 1) / reports_per_epoch of that
    epoch: the epoch's full validation (`monitor`) at its end, and in between the score on about
    `subset` validation sentences (whole batches spread evenly over the loader's length-sorted order,
    the same every time, scored with the weights being trained; used only for this decision). The
    trial's last step is never judged: its objective goes to the study whole. A pruned trial stops at
    once (the sweep sets `trainer.min_epochs: 0`) and is validated once more by Lightning; `pruned_at`
    holds the step, its metrics and TensorBoard hparams are written, and the training task reports it
    as pruned.
    """

    def __init__(self, monitor: str = "val/f1_weighted", reports_per_epoch: int = 4, subset: int = 512) -> None:
        if reports_per_epoch < 1 or subset < 1:
            raise ValueError(f"reports_per_epoch={reports_per_epoch} and subset={subset} must be at least 1")
        self.monitor, self.reports_per_epoch, self.subset = monitor, reports_per_epoch, subset
        self.pruned_at: int | None = None
        self._trial: optuna.Trial | None = None
        self._report_batches: dict[int, int] = {}  # batches done -> the part of the epoch they end
        self._subset_batches: list[dict[str, Any]] | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or not HydraConfig.initialized():
            return
        hydra_cfg = HydraConfig.get()
        if "pruner" not in hydra_cfg.sweeper or hydra_cfg.job.get("num") is None:  # not our sweeper's trial
            return
        trial = trial_in_this_job(hydra_cfg.sweeper, int(hydra_cfg.job.num))
        if trial is not None and trainer.world_size > 1:
            # Reports from every DDP process would race; trials here run on one process.
            log.warning("pruning is off for this trial: it runs on %d processes (DDP)", trainer.world_size)
        else:
            self._trial = trial

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        batches, every = trainer.num_training_batches, self.reports_per_epoch
        judged = self._trial is not None and not isinstance(self._trial.study.pruner, optuna.pruners.NopPruner)
        # After which batch each part of the epoch ends (a part too short for a batch of its own is
        # skipped); the last part ends with the epoch's full validation.
        ends = {round(batches * k / every): k for k in range(1, every)} if judged else {}
        self._report_batches = {done: k for done, k in ends.items() if 0 < done < batches}

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int):
        part = self._report_batches.get(batch_idx + 1)
        if part is None:
            return
        step = pl_module.current_epoch * self.reports_per_epoch + part - 1
        self._report(trainer, step, self._subset_f1(trainer, pl_module))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._trial is None or trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking:
            return
        if self.pruned_at is not None:  # Lightning validates once more when a run stops inside an epoch
            return
        if trainer.max_epochs is not None and pl_module.current_epoch >= trainer.max_epochs - 1:
            return  # the last step has been paid for: the trial's score goes to the study whole
        score = trainer.callback_metrics.get(self.monitor)
        if score is None:
            raise KeyError(f"pruning monitors {self.monitor!r}, which validation did not log")
        self._report(trainer, (pl_module.current_epoch + 1) * self.reports_per_epoch - 1, float(score))

    def _report(self, trainer: L.Trainer, step: int, score: float) -> None:
        self._trial.report(score, step)
        if self._trial.should_prune():
            self.pruned_at = step
            trainer.should_stop = True
            self._report_batches = {}
            log.info(
                "trial pruned at step %d (%.2f epochs): weighted F1 %.4f below the study's pruner threshold",
                step,
                self.epochs_at(step),
                score,
            )

    def epochs_at(self, step: int) -> float:
        """How many epochs a trial had trained when it reported `step`."""
        return (step + 1) / self.reports_per_epoch

    def _subset(self, trainer: L.Trainer) -> list[dict[str, Any]]:
        """The validation batches scored inside an epoch, chosen once: enough for `subset` sentences,
        spread evenly over the loader (sorted by length, so short and long sentences both count)."""
        if self._subset_batches is None:
            # Before the first validation (no sanity check) the trainer holds no validation loader yet.
            loader = trainer.val_dataloaders or trainer.datamodule.val_dataloader()
            with torch.random.fork_rng(devices=[]):  # a loader's iterator draws a seed: keep training's stream
                batches = list(loader)
            sizes = [batch["labels"].numel() for batch in batches]
            wanted = min(len(batches), max(1, round(self.subset / (sum(sizes) / len(sizes)))))
            self._subset_batches = [batches[i] for i in torch.linspace(0, len(batches) - 1, wanted).round().long()]
        return self._subset_batches

    @torch.no_grad()
    def _subset_f1(self, trainer: L.Trainer, pl_module: L.LightningModule) -> float:
        """Weighted F1 on the fixed validation subset, with the weights being trained."""
        subset = self._subset(trainer)
        modes = {module: module.training for module in pl_module.modules()}
        pl_module.eval()
        logits, labels = [], []
        try:
            with trainer.precision_plugin.forward_context():
                for batch in subset:
                    batch = pl_module.transfer_batch_to_device(batch, pl_module.device, 0)
                    logits.append(pl_module.logits(batch).float())
                    labels.append(batch["labels"])
        finally:
            for module, training in modes.items():
                module.train(training)
        preds, target = torch.cat(logits).argmax(-1), torch.cat(labels)
        return float(multiclass_f1_score(preds, target, num_classes=NUM_CLASSES, average="weighted"))
