"""Small helpers the entry points share: building callbacks and loggers, logging hyperparameters."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from emotion_lab.errors import UserInputError

log = logging.getLogger(__name__)


def configure_torch(threads: int | None, cudnn_attention: bool) -> None:
    """Process-wide torch settings from the run config (`torch_threads`, `cudnn_attention`)."""
    if threads:
        torch.set_num_threads(threads)
    torch.backends.cuda.enable_cudnn_sdp(cudnn_attention)


def instantiate_callbacks(cfg: DictConfig | None) -> list[L.Callback]:
    """Every entry of the `callbacks` group that has a `_target_` (a null entry switches one off)."""
    return [hydra.utils.instantiate(c) for c in (cfg or {}).values() if isinstance(c, DictConfig) and "_target_" in c]


def instantiate_loggers(cfg: DictConfig | None) -> list[Logger]:
    return [hydra.utils.instantiate(c) for c in (cfg or {}).values() if isinstance(c, DictConfig) and "_target_" in c]


def metrics_to_floats(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v.item() if isinstance(v, torch.Tensor) else v) for k, v in metrics.items()}


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}/{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value if isinstance(value, (int, float, str, bool)) else str(value)


def log_hyperparameters(
    cfg: DictConfig, model: L.LightningModule, trainer: L.Trainer, metrics: dict[str, float], status: str = "ok"
) -> None:
    """Send the run's settings, how it ended (`status`: ok, pruned after epoch N, failed: ...) and its
    final metrics to TensorBoard's hparams view, where a sweep's pruned trials can be filtered out."""
    config = OmegaConf.to_container(cfg, resolve=True)
    params: dict[str, Any] = {}
    for section in ("model", "data", "loss", "trainer"):
        _flatten(section, config.get(section, {}), params)
    params = {k: v for k, v in params.items() if not k.endswith("_target_") and v is not None}
    params["seed"] = cfg.get("seed")
    params["status"] = status
    params["params/total"] = sum(p.numel() for p in model.parameters())
    params["params/trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    hp_metrics = {k: v for k, v in metrics.items() if k.startswith(("test/", "val/"))}
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(params, metrics=hp_metrics)
        else:
            logger.log_hyperparams(params)


def _user_error(err: BaseException) -> UserInputError | None:
    """The UserInputError behind `err` (Hydra wraps errors raised while instantiating)."""
    while err is not None:
        if isinstance(err, UserInputError):
            return err
        err = err.__cause__ or (err.__context__ if isinstance(err, InstantiationException) else None)
    return None


def run_task(
    task: Callable[[DictConfig], Any], cfg: DictConfig, on_failure: Callable[[Exception], Any] | None = None
) -> Any:
    """Run an entry point's task; a user error becomes one clear message instead of a traceback.

    In a single run the process exits with status 2. In a multirun the trial is logged as failed
    and `on_failure(error)` is returned, so one bad combination does not end the sweep.
    """
    try:
        return task(cfg)
    except Exception as err:
        user_error = _user_error(err)
        if user_error is None:
            raise
        multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
        log.error("%s%s", "trial failed: " if multirun else "", user_error)
        if multirun:
            return on_failure(user_error) if on_failure else None
        sys.exit(2)
