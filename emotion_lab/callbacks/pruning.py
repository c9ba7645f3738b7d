"""Pruning of sweep trials: each epoch's validation score goes to the Optuna study, whose pruner may
stop the trial there."""

from __future__ import annotations

import logging

import lightning as L
import optuna
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.trainer.states import TrainerFn
from optuna_integration import PyTorchLightningPruningCallback

from emotion_lab.sweeps.study import trial_in_this_job

log = logging.getLogger(__name__)


class OptunaPruning(L.Callback):
    """Optuna's Lightning pruning callback for a trial of `hparams_search=optuna`; inert in any other run.

    A pruned trial stops like an early-stopped one (`pruned_at` holds the epoch): its best checkpoint,
    metrics and TensorBoard hparams are written, and the training task then reports it as pruned.
    """

    def __init__(self, monitor: str = "val/f1_weighted") -> None:
        self.monitor = monitor
        self.pruned_at: int | None = None
        self._optuna: PyTorchLightningPruningCallback | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or not HydraConfig.initialized():
            return
        sweeper = HydraConfig.get().sweeper
        if "pruner" not in sweeper:  # another sweeper (Hydra's grid) launched this run
            return
        trial = trial_in_this_job(sweeper.pruner, sweeper.study_name, sweeper.storage)
        if trial is not None and trainer.world_size > 1:
            # Optuna's DDP path needs a database and a check after fit; trials here run on one process.
            log.warning("pruning is off for this trial: it runs on %d processes (DDP)", trainer.world_size)
        elif trial is not None:
            self._optuna = PyTorchLightningPruningCallback(trial, monitor=self.monitor)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._optuna is not None:
            self._optuna.on_fit_start(trainer, pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._optuna is None or trainer.state.fn != TrainerFn.FITTING:  # not the best checkpoint's re-validation
            return
        if trainer.max_epochs is not None and pl_module.current_epoch >= trainer.max_epochs - 1:
            return  # the last epoch has been paid for: the trial's score goes to the study whole
        try:
            self._optuna.on_validation_end(trainer, pl_module)
        except optuna.TrialPruned:
            self.pruned_at = pl_module.current_epoch
            trainer.should_stop = True
            log.info("trial pruned after epoch %d: %s below the study's pruner threshold", self.pruned_at, self.monitor)
