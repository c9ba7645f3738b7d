"""Train, validate and test an emotion classifier.

    python -m emotion_lab.train                                   # defaults: hybrid, focal loss
    python -m emotion_lab.train experiment=best_cpu               # the benchmark recipe
    python -m emotion_lab.train model/net=encoder_linear loss=ce  # the plain fine-tune
    python -m emotion_lab.train -m model.net.lstm_hidden=128,256 model.net.attn_heads=2,4
    python -m emotion_lab.train debug=fdr                         # one batch of each stage

Each run writes into outputs/<task_name>/runs/<time>/: .hydra/ (composed config), checkpoints/,
tensorboard/, test_report.txt, test_report.json, errors.csv, figures/ and metrics.json.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import optuna
from lightning.pytorch.callbacks import WeightAveraging
from omegaconf import DictConfig, open_dict

from emotion_lab.callbacks.pruning import OptunaPruning
from emotion_lab.data.contract import check_datamodule
from emotion_lab.errors import ConfigError, first_line
from emotion_lab.models.classifier import EmotionClassifier
from emotion_lab.sweeps.extras import missing_launcher
from emotion_lab.utils.atomic import write_text
from emotion_lab.utils.config import CONFIG_DIR, cpu_has_native_bf16
from emotion_lab.utils.runtime import (
    configure_torch,
    instantiate_callbacks,
    instantiate_loggers,
    log_hyperparameters,
    metrics_to_floats,
    run_task,
)

log = logging.getLogger(__name__)


def check_optimized_metric(cfg: DictConfig) -> None:
    """A sweep maximises `optimized_metric`: a name no run logs would score every trial as failed."""
    name = cfg.get("optimized_metric")
    if name is not None and name.startswith("test") and not cfg.get("test"):
        raise ConfigError(f"optimized_metric={name!r} is a test metric, but test=false: sweeps select on val/ metrics")
    if name is not None and name not in EmotionClassifier.metric_names():
        raise ConfigError(
            f"optimized_metric={name!r} is not a metric a run logs; e.g. val/f1_weighted_best, val/f1_macro, "
            "val/f1_weighted (all: EmotionClassifier.metric_names())"
        )


def resume_target(cfg: DictConfig) -> tuple[Path | None, Path | None]:
    """The checkpoint `ckpt_path` names, and the run folder it belongs to (where the run continues).

    `last`: the newest `last.ckpt` of this task's interrupted runs; a folder: that run's last.ckpt;
    a file: itself. Anything that does not exist is an error, never a silent start from scratch.
    """
    value = cfg.get("ckpt_path")
    if value is None:
        return None, None
    here = Path(cfg.paths.output_dir).resolve()
    if str(value) == "last":
        runs = Path(cfg.paths.log_dir) / cfg.task_name / "runs"
        # A run that finished wrote metrics.json; only an interrupted one is there to resume.
        found = [
            p
            for p in runs.glob("*/checkpoints/last.ckpt")
            if p.parent.parent.resolve() != here and not (p.parent.parent / "metrics.json").is_file()
        ]
        if not found:
            raise ConfigError(
                f"ckpt_path=last: no interrupted run of task {cfg.task_name!r} under {runs} (finished: metrics.json)"
            )
        ckpt = max(found, key=lambda p: p.stat().st_mtime)
    else:
        ckpt = Path(str(value))
        if ckpt.is_dir():
            ckpt = ckpt / "checkpoints" / "last.ckpt"
        if not ckpt.is_file():
            raise ConfigError(f"ckpt_path={value}: no such checkpoint (give a .ckpt file, a run folder, or `last`)")
    run_dir = ckpt.parent.parent
    return ckpt, (run_dir if ckpt.parent.name == "checkpoints" and (run_dir / ".hydra").is_dir() else None)


def train(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """Seed, build, fit, then test the best checkpoint. Returns (metrics, objects)."""
    check_optimized_metric(cfg)
    ckpt_path, resumed_run = resume_target(cfg) if cfg.get("train") else (None, None)
    if resumed_run is not None and resumed_run.resolve() != Path(cfg.paths.output_dir).resolve():
        # Continue in the interrupted run's folder: its checkpoints, TensorBoard curves and reports.
        new_dir = Path(cfg.paths.output_dir)
        new_dir.mkdir(parents=True, exist_ok=True)
        (new_dir / "resumed_in.txt").write_text(f"{resumed_run}\n")
        with open_dict(cfg):
            cfg.paths.output_dir = str(resumed_run)
    if ckpt_path is not None:
        log.info("resuming from %s; the run continues in %s", ckpt_path, cfg.paths.output_dir)
    L.seed_everything(cfg.seed, workers=True)
    # Outside this module: launchers pickle `python -m` entry points by value, and torch.backends.cuda cannot be.
    configure_torch(cfg.torch_threads, cfg.cudnn_attention)
    output_dir = Path(cfg.paths.output_dir)

    precision = {"precision": str(cfg.trainer.precision), "cpu_native_bf16": cpu_has_native_bf16()}
    log.info(
        "precision %s on %s (CPU with native bf16: %s)",
        precision["precision"],
        cfg.trainer.accelerator,
        "yes" if precision["cpu_native_bf16"] else "no, so ${mixed_precision:cpu} gives fp32",
    )
    log.info("data: %s", cfg.data._target_)
    datamodule: L.LightningDataModule = hydra.utils.instantiate(cfg.data)
    check_datamodule(datamodule)
    log.info("model: %s with net %s", cfg.model._target_, cfg.model.net._target_)
    model: L.LightningModule = hydra.utils.instantiate(cfg.model)
    callbacks = instantiate_callbacks(cfg.get("callbacks"))
    loggers = instantiate_loggers(cfg.get("logger"))
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)

    timings: dict[str, float] = {}
    if cfg.get("train"):
        start = time.perf_counter()
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        timings["train_seconds"] = time.perf_counter() - start
        timings["epochs"] = trainer.current_epoch
        timings["steps"] = trainer.global_step
    fit_metrics = metrics_to_floats(trainer.callback_metrics)
    pruning = next((c for c in trainer.callbacks if isinstance(c, OptunaPruning)), None)
    pruned_at = pruning.pruned_at if pruning else None
    if pruned_at is not None:
        timings.update(pruned_at_step=pruned_at, pruned_after_epochs=pruning.epochs_at(pruned_at))

    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    # A weight-averaging callback (callbacks=[default,ema]) has written the averaged weights as each
    # checkpoint's state_dict. Left in place, it would load the raw weights back from the checkpoint
    # and swap the average in for validation only: the test would score the raw weights.
    trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, WeightAveraging)]
    if cfg.get("train") and best:
        # After fit, callback_metrics hold the *last* epoch's validation; report the selected one's.
        trainer.validate(model, datamodule=datamodule, ckpt_path=best, weights_only=True, verbose=False)
        fit_metrics.update(metrics_to_floats(trainer.callback_metrics))
    if cfg.get("test") and pruned_at is None:
        if not best:
            log.warning("no best checkpoint (fast_dev_run or no checkpoint callback): testing the current weights")
        start = time.perf_counter()
        trainer.test(model, datamodule=datamodule, ckpt_path=best or None, weights_only=True)
        timings["test_seconds"] = time.perf_counter() - start
        log.info("best checkpoint: %s", best or "(current weights)")

    metrics = {**fit_metrics, **metrics_to_floats(trainer.callback_metrics), **timings}
    train_loss = metrics.get("train/loss_epoch", 0.0)
    status = "ok" if math.isfinite(train_loss) else "failed: non-finite training loss"
    if pruned_at is not None:
        status = f"pruned after {pruning.epochs_at(pruned_at):g} epochs"
    if cfg.get("export") and best and pruned_at is None:
        from emotion_lab.inference.export import export

        # The network this run just built from the user's own config: its module is trusted.
        own_module = str(cfg.model.net._target_).rpartition(".")[0]
        export(
            best,
            output_dir / "model",
            metrics=metrics,
            data_source=datamodule.source,
            trusted_modules=[own_module],
            max_length=datamodule.max_length,
            onnx=cfg.onnx,
        )
    log_hyperparameters(cfg, model, trainer, metrics, status=status)
    output_dir.mkdir(parents=True, exist_ok=True)
    run_info = {"status": status, "data_source": datamodule.source, **precision}
    write_metrics(output_dir, {**run_info, **dict(sorted(metrics.items()))})
    if "test/f1_weighted" in metrics:
        log.info(
            "test: weighted F1 %.4f, macro F1 %.4f, accuracy %.4f",
            metrics["test/f1_weighted"],
            metrics["test/f1_macro"],
            metrics["test/acc"],
        )
        log.info("report: %s", output_dir / "test_report.txt")
    return metrics, {"cfg": cfg, "datamodule": datamodule, "model": model, "trainer": trainer}


def write_metrics(output_dir: Path, metrics: dict[str, Any]) -> None:
    write_text(output_dir / "metrics.json", json.dumps(metrics, indent=2))


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    def record_failure(err: Exception) -> dict:
        write_metrics(Path(cfg.paths.output_dir), {"status": f"failed: {first_line(err)}"})
        return {}

    try:
        check_optimized_metric(cfg)
    except ConfigError as err:  # every trial would fail the same way: stop, even in a sweep
        log.error("%s", err)
        sys.exit(2)
    metrics = run_task(lambda c: train(c)[0], cfg, on_failure=record_failure)
    if "pruned_at_step" in metrics:
        # Raised to the sweeper (Hydra hands a job's exception back), which records the trial as pruned.
        raise optuna.TrialPruned(f"pruned after {metrics['pruned_after_epochs']:g} epochs")
    value = metrics.get(cfg.get("optimized_metric"))
    diverged = not math.isfinite(metrics.get("train/loss_epoch", 0.0))
    # What a sweeper maximises; None (a failed or diverged trial) is recorded as a failed trial.
    return None if value is None or diverged or not math.isfinite(value) else value


def cli() -> None:
    """`python -m emotion_lab.train` and the `emotion-train` console script: main's return value is for
    sweepers, not an exit status."""
    if problem := missing_launcher(sys.argv[1:]):
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)
    main()


if __name__ == "__main__":
    cli()
