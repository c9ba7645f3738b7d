"""Re-test a trained checkpoint on the test split.

    python -m emotion_lab.evaluate ckpt_path=outputs/best_cpu/runs/<time>/checkpoints/last.ckpt
    python -m emotion_lab.evaluate ckpt_path=... data.dir=/other/emotion
    python -m emotion_lab.evaluate ckpt_path=... +data.extra_eval.reddit=/path/to/reddit.txt

The network is rebuilt from the checkpoint alone (it stores its own config; nothing is unpickled),
so no training config is needed. Validates first (fitting a temperature on the validation split
when the checkpoint carries none, as checkpoints from before calibration do), then tests, then scores
the evaluation-only sets of `data.extra_eval` (extra/<name>/... in metrics.json). Writes
test_report.txt, test_report.json, errors.csv, metrics.json and figures/ into outputs/evaluate/runs/<time>/.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from omegaconf import DictConfig, open_dict

from emotion_lab.callbacks import ExtraEvaluation, RunFigures, TestReport
from emotion_lab.data.contract import check_datamodule
from emotion_lab.encoders.loading import downloads_refused
from emotion_lab.errors import ConfigError
from emotion_lab.models.checkpoints import load_classifier
from emotion_lab.utils.atomic import write_text
from emotion_lab.utils.config import CONFIG_DIR
from emotion_lab.utils.runtime import instantiate_loggers, metrics_to_floats, run_task

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    L.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    model = load_classifier(cfg.ckpt_path, trusted_modules=list(cfg.trusted_modules), allow_download=cfg.allow_download)
    with open_dict(cfg):
        cfg.data.tokenizer_name = cfg.data.tokenizer_name or model.hparams.net["encoder_name"]
    datamodule: L.LightningDataModule = hydra.utils.instantiate(cfg.data)
    check_datamodule(datamodule)
    if model.spelling_words is not None:
        if not hasattr(datamodule, "use_spelling"):
            raise ConfigError(
                f"ckpt_path={cfg.ckpt_path}: the model reads text through a spelling step, which "
                f"{type(datamodule).__qualname__} cannot apply (it has no use_spelling(counts))"
            )
        datamodule.use_spelling(model.spelling_words)
    trainer: L.Trainer = hydra.utils.instantiate(
        cfg.trainer,
        logger=instantiate_loggers(cfg.get("logger")),
        callbacks=[
            TestReport(str(output_dir)),
            ExtraEvaluation(),
            RunFigures(str(output_dir), f"evaluate {Path(cfg.ckpt_path).stem}"),
        ],
    )
    # The tokenizer the checkpoint names loads in setup: from local files only, unless downloads are allowed.
    with contextlib.nullcontext() if cfg.allow_download else downloads_refused():
        # Validation first: the test's calibrated scores use the checkpoint's temperature, or one fitted here.
        trainer.validate(model, datamodule=datamodule, verbose=False)
        val_metrics = metrics_to_floats(trainer.callback_metrics)
        trainer.test(model, datamodule=datamodule)
    metrics = {**val_metrics, **metrics_to_floats(trainer.callback_metrics)}
    write_text(
        output_dir / "metrics.json",
        json.dumps({"ckpt_path": str(cfg.ckpt_path), **dict(sorted(metrics.items()))}, indent=2),
    )
    log.info(
        "test: weighted F1 %.4f, macro F1 %.4f (%s)",
        metrics["test/f1_weighted"],
        metrics["test/f1_macro"],
        output_dir / "test_report.txt",
    )
    return metrics, {"model": model, "datamodule": datamodule, "trainer": trainer}


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="evaluate")
def main(cfg: DictConfig) -> None:
    run_task(evaluate, cfg)


if __name__ == "__main__":
    main()
