import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf, open_dict

from emotion_lab.errors import ConfigError, ModelLoadError, TrainingDivergedError
from emotion_lab.evaluate import evaluate
from emotion_lab.inference.predictor import EmotionPredictor
from emotion_lab.models.checkpoints import load_classifier
from emotion_lab.models.classifier import EmotionClassifier
from emotion_lab.models.loading import weights_digest
from emotion_lab.train import check_optimized_metric, train
from emotion_lab.utils.config import CONFIG_DIR, PROJECT_ROOT
from tests.conftest import QUIET, compose_config

EXPERIMENTS = sorted(p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("*.yaml"))


def data_dir_of(cfg) -> Path:
    return Path(cfg.data.dir)


def evaluate_checkpoint(ckpt_path: str, data_dir: str, output_dir: Path) -> dict[str, float]:
    """`python -m emotion_lab.evaluate` on a checkpoint: its test metrics."""
    cfg = compose_config(
        "evaluate", [f"ckpt_path={ckpt_path}", f"data.dir={data_dir}", "trainer.enable_progress_bar=false"], output_dir
    )
    return evaluate(cfg)[0]


@pytest.mark.parametrize("rdrop", [0.0, 1.0])
def test_fast_dev_run_with_a_tiny_encoder(tiny_train_cfg, monkeypatch, rdrop):
    cudnn_attention = []
    monkeypatch.setattr(torch.backends.cuda, "enable_cudnn_sdp", cudnn_attention.append)
    with open_dict(tiny_train_cfg):
        tiny_train_cfg.trainer.fast_dev_run = True
        tiny_train_cfg.model.rdrop = rdrop
    metrics, objects = train(tiny_train_cfg)
    assert cudnn_attention == [False]  # emotion_lab/conf/train.yaml: cudnn_attention=false
    assert objects["model"].rdrop == rdrop
    assert 0.0 <= metrics["test/f1_weighted"] <= 1.0
    assert {f"test_f1/{label}" for label in ("sadness", "love", "surprise")} <= set(metrics)


def test_training_writes_the_run_folder_and_evaluate_reproduces_the_test(tiny_train_cfg, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr("emotion_lab.train.cpu_has_native_bf16", lambda: False)  # a CPU that only emulates bf16
    caplog.set_level("INFO", logger="emotion_lab.train")
    with open_dict(tiny_train_cfg):
        tiny_train_cfg.trainer.max_epochs = 2
    metrics, objects = train(tiny_train_cfg)
    out = Path(tiny_train_cfg.paths.output_dir)
    assert (out / "metrics.json").is_file() and (out / "test_report.txt").is_file()
    report = (out / "test_report.txt").read_text()
    for row in ("sadness", "surprise", "accuracy", "macro avg", "weighted avg"):
        assert row in report
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["test/f1_weighted"] == pytest.approx(metrics["test/f1_weighted"])
    assert "val/f1_weighted_best" in saved and saved["train_seconds"] > 0
    assert saved["precision"] == "32-true" and saved["cpu_native_bf16"] is False  # what ran, and why
    assert "precision 32-true on cpu (CPU with native bf16: no" in caplog.text
    # Per-class validation F1 went to the loggers as one scalar per class.
    logged = (out / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {f"val_f1/{label}" for label in ("sadness", "joy", "love", "anger", "fear", "surprise")} <= set(logged)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0}).Reload()
    tags = events.Tags()
    assert {"val_f1/love", "val_f1/surprise", "val/f1_weighted", "test/f1_macro"} <= set(tags["scalars"])
    assert {"val/confusion_matrix", "test/confusion_matrix"} <= set(tags["images"])
    figures = ("f1_by_class", "precision_recall_f1", "confusion_matrix", "reliability", "class_distribution")
    quoting = ("attention_words", "attribution_words")  # beside figures/, not in it: they quote test sentences
    figures += quoting
    assert {f"test_figures/{name}" for name in figures if name != "confusion_matrix"} <= set(tags["images"])
    assert not any((out / "figures" / f"{name}.png").exists() for name in quoting)
    for name in figures:
        png = (out if name in quoting else out / "figures") / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.with_suffix(".svg").is_file()
        assert matplotlib.image.imread(png)[..., :3].std() > 0.05

    best = objects["trainer"].checkpoint_callback.best_model_path
    assert Path(best).is_file() and (out / "checkpoints" / "last.ckpt").is_file()
    eval_metrics = evaluate_checkpoint(best, tiny_train_cfg.data.dir, tmp_path / "eval")
    assert eval_metrics["test/f1_weighted"] == pytest.approx(metrics["test/f1_weighted"], abs=1e-6)

    # Calibration: the temperature was fitted on the best epoch's validation logits, travels in the
    # checkpoint, and scales the test's probabilities; evaluate refits it on validation to the same value.
    checkpoint = torch.load(best, weights_only=True)
    # A fine-tuned encoder is part of what was trained: the checkpoint stores it.
    assert (
        "encoder_ref" not in checkpoint and "net.encoder.embeddings.word_embeddings.weight" in checkpoint["state_dict"]
    )
    assert checkpoint["temperature"] == pytest.approx(saved["val/temperature"]) != 1.0
    for name in ("test/nll", "test/ece", "test/nll_calibrated", "test/ece_calibrated"):
        assert name in saved and eval_metrics[name] == pytest.approx(saved[name], abs=1e-5)
    assert saved["test/nll_calibrated"] != saved["test/nll"]
    assert eval_metrics["val/temperature"] == pytest.approx(saved["val/temperature"], abs=1e-4)
    assert "ece_calibrated" in report and f"{saved['val/temperature']:.4f}" in report
    with (out / "errors.csv").open() as file:
        errors = list(csv.DictReader(file))
    assert (out / "errors.csv").read_text().splitlines()[0] == "text,true,predicted,probability"
    for label in ("sadness", "joy", "love", "anger", "fear", "surprise"):
        mine = [float(row["probability"]) for row in errors if row["true"] == label]
        assert mine == sorted(mine, reverse=True)
    assert all(row["true"] != row["predicted"] for row in errors)
    file_label = {
        line.rsplit(";", 1)[0]: line.rsplit(";", 1)[1]
        for line in (data_dir_of(tiny_train_cfg) / "test.txt").read_text().splitlines()
    }
    assert all(file_label[row["text"]] == row["true"] for row in errors)  # each sentence with its own label
    assert "confusions that cost the most weighted F1" in report
    calibration = json.loads((out / "test_report.json").read_text())["calibration"]
    assert calibration["ece"] == pytest.approx(saved["test/ece"])
    # A checkpoint from before calibration has no temperature: evaluate fits one on validation.
    del checkpoint["temperature"]
    torch.save(checkpoint, tmp_path / "old.ckpt")
    old = evaluate_checkpoint(str(tmp_path / "old.ckpt"), tiny_train_cfg.data.dir, tmp_path / "eval_old")
    assert old["val/temperature"] == pytest.approx(saved["val/temperature"], abs=1e-3)

    # The checkpoint rebuilds the network alone and gives the tested model's logits (trainer.test loaded
    # the best weights into objects["model"]).
    reloaded = load_classifier(best)
    assert reloaded.net is not objects["model"].net
    batch = next(iter(objects["datamodule"].test_dataloader()))
    tested = objects["model"].eval()
    with torch.no_grad():
        assert torch.allclose(
            reloaded(batch["input_ids"], batch["attention_mask"]),
            tested(batch["input_ids"], batch["attention_mask"]),
            atol=1e-6,
        )


def test_a_frozen_encoder_is_referenced_not_copied_and_reloads_to_the_same_logits(tiny_train_cfg, tmp_path):
    with open_dict(tiny_train_cfg):
        tiny_train_cfg.model.net.freeze_encoder = True
        tiny_train_cfg.model.reference_frozen_encoder = True  # what sweeps set
        tiny_train_cfg.data.feature_cache = {"enabled": True, "dir": str(tmp_path / "cache")}
    metrics, objects = train(tiny_train_cfg)
    best = objects["trainer"].checkpoint_callback.best_model_path
    checkpoint = torch.load(best, weights_only=True)
    assert not [k for k in checkpoint["state_dict"] if k.startswith("net.encoder.")]
    assert checkpoint["encoder_ref"] == {
        "name": tiny_train_cfg.model.net.encoder_name,
        "sha256": weights_digest(objects["model"].net.encoder),
    }
    encoded = EmotionPredictor.from_checkpoint(best).tokenizer(
        ["i feel so happy today", "i am scared"], padding=True, return_tensors="pt"
    )
    trained = objects["model"].eval()
    with torch.no_grad():
        expected = trained(encoded["input_ids"], encoded["attention_mask"])
        assert torch.allclose(
            load_classifier(best)(encoded["input_ids"], encoded["attention_mask"]), expected, atol=1e-6
        )
        predictor = EmotionPredictor.from_checkpoint(best)
        assert torch.allclose(predictor.net(encoded["input_ids"], encoded["attention_mask"]), expected, atol=1e-6)
    # train() re-validated and tested this checkpoint through Lightning's loading hook.
    assert "test/f1_weighted" in metrics
    # Another encoder under the same name: refused, naming what was expected.
    checkpoint["encoder_ref"]["sha256"] = "0" * 64
    torch.save(checkpoint, tmp_path / "other.ckpt")
    with pytest.raises(ModelLoadError, match=r"trained on encoder .* with weights sha256 000000000000\.\.\., but"):
        load_classifier(tmp_path / "other.ckpt")


def test_encoder_linear_variant_and_ce_loss_train(tiny_train_cfg, tiny_encoder):
    cfg = compose_config(
        "train",
        [
            "model/net=encoder_linear",
            f"model.net.encoder_name={tiny_encoder}",
            "loss=ce",
            f"data.dir={tiny_train_cfg.data.dir}",
            "trainer.fast_dev_run=true",
            "logger=csv",
            "trainer.enable_progress_bar=false",
            "callbacks.progress_bar=null",
        ],
        Path(tiny_train_cfg.paths.output_dir),
    )
    assert cfg.model.loss._target_.endswith(".CrossEntropyLoss") and "gamma" not in cfg.loss
    metrics, objects = train(cfg)
    assert type(objects["model"].net).__name__ == "EncoderLinearNet"
    assert "test/f1_weighted" in metrics


def test_bad_heads_fail_before_training(tiny_train_cfg):
    with open_dict(tiny_train_cfg):
        tiny_train_cfg.model.net.attn_heads = 3
    with pytest.raises(Exception, match="attn_heads=3"):
        train(tiny_train_cfg)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_builds(experiment, tmp_path, tiny_encoder):
    import hydra

    cfg = compose_config("train", [f"experiment={experiment}", f"model.net.encoder_name={tiny_encoder}"], tmp_path)
    assert cfg.task_name == experiment
    net = hydra.utils.instantiate(cfg.model).net
    assert net.config["encoder_name"] == tiny_encoder
    for name in ("data", "trainer", "loss"):
        assert cfg[name] is not None


def test_experiments_exist():
    assert {"best_cpu", "best_gpu", "cached_head", "distilled_cpu", "robust_cpu", "seed_paper", "teacher_mpnet"} == set(
        EXPERIMENTS
    )


@pytest.mark.slow
def test_smoke_with_the_real_default_encoder(tiny_train_cfg, data_dir):
    """The embedded MiniLM, offline, on 64 synthetic sentences: the real pipeline end to end."""
    with open_dict(tiny_train_cfg):
        tiny_train_cfg.model.net.encoder_name = "sentence-transformers/all-MiniLM-L6-v2"
        tiny_train_cfg.model.net.lstm_hidden = 32
        tiny_train_cfg.data.limit_per_split = 64
        tiny_train_cfg.data.batch_size = 16
    metrics, objects = train(tiny_train_cfg)
    assert objects["model"].net.encoder_dim == 384
    # Six cue words per class: even one epoch of the real encoder beats chance (1/6) by far.
    assert metrics["test/acc"] > 0.4


@pytest.mark.slow
def test_two_trial_multirun(tmp_path, data_dir, tiny_encoder):
    GlobalHydra.instance().clear()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [
        sys.executable,
        "-m",
        "emotion_lab.train",
        "-m",
        "debug=fdr",
        "model.net.lstm_hidden=8,16",
        f"model.net.encoder_name={tiny_encoder}",
        f"data.dir={data_dir}",
        f"paths.log_dir={tmp_path}",
        "trainer.enable_progress_bar=false",
        "callbacks.progress_bar=null",
    ]
    result = subprocess.run(cmd, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    trials = sorted((tmp_path / "train" / "multiruns").glob("*/[0-9]*"))
    assert [t.name for t in trials] == ["0", "1"]
    for trial, hidden in zip(trials, (8, 16)):
        assert f"model.net.lstm_hidden={hidden}" in (trial / ".hydra" / "overrides.yaml").read_text()
        # A failed trial also writes metrics.json (its status) and exits 0: each must have trained and tested.
        metrics = json.loads((trial / "metrics.json").read_text())
        assert metrics["status"] == "ok", metrics["status"]
        assert math.isfinite(metrics["train/loss_epoch"]) and 0.0 <= metrics["test/f1_weighted"] <= 1.0


def test_user_errors_become_one_message_and_exit_status_2(caplog):
    from emotion_lab.data.sources import DataFormatError
    from emotion_lab.utils.runtime import run_task

    def bad_data(cfg):
        raise DataFormatError("train.txt:7: unknown label 'bored'")

    with pytest.raises(SystemExit) as exit_info:
        run_task(bad_data, cfg=None)
    assert exit_info.value.code == 2
    assert "train.txt:7: unknown label 'bored'" in caplog.text

    def bug(cfg):
        raise KeyError("a programming error keeps its traceback")

    with pytest.raises(KeyError):
        run_task(bug, cfg=None)


def test_weight_averaging_is_what_validation_test_and_the_checkpoint_hold(tiny_train_cfg, tmp_path):
    cfg = compose_config(
        "train",
        [
            f"model.net.encoder_name={tiny_train_cfg.model.net.encoder_name}",
            f"data.dir={tiny_train_cfg.data.dir}",
            "callbacks=[default,ema]",
            "callbacks.ema.decay=0.5",  # far from the raw weights after a few steps
            "model.optimizer.lr=1e-2",
            "trainer.max_epochs=2",
            "logger=csv",
            "trainer.enable_progress_bar=false",
            "callbacks.progress_bar=null",
            "export=false",
        ],
        Path(tiny_train_cfg.paths.output_dir),
    )
    metrics, objects = train(cfg)
    best = objects["trainer"].checkpoint_callback.best_model_path
    checkpoint = torch.load(best, map_location="cpu", weights_only=True)
    averaged, raw = checkpoint["state_dict"], checkpoint["current_model_state"]
    assert any(not torch.equal(averaged[k], raw[k]) for k in averaged if averaged[k].is_floating_point())
    # The test scored the averaged weights: the same numbers as evaluating the checkpoint alone.
    eval_metrics = evaluate_checkpoint(best, cfg.data.dir, tmp_path / "eval")
    assert eval_metrics["test/loss"] == pytest.approx(metrics["test/loss"], abs=1e-6)
    assert metrics["val/f1_weighted"] == pytest.approx(metrics["val/f1_weighted_best"])


def poison_steps(monkeypatch, steps):
    """Make the training loss (so every gradient) NaN at the given global steps; `steps=None`: at every step."""
    original = EmotionClassifier._step

    def step(self, batch):
        loss, logits = original(self, batch)
        poisoned = self.training and (steps is None or self.global_step in steps)
        return (loss * float("nan") if poisoned else loss), logits

    monkeypatch.setattr(EmotionClassifier, "_step", step)


def test_a_step_with_non_finite_gradients_is_skipped_not_applied(tiny_train_cfg, monkeypatch):
    poison_steps(monkeypatch, {1})
    with open_dict(tiny_train_cfg):
        tiny_train_cfg.trainer.max_epochs = 2
    metrics, objects = train(tiny_train_cfg)
    model = objects["model"]
    assert model.skipped_steps == 1
    assert all(torch.isfinite(p).all() for p in model.parameters())
    saved = json.loads((Path(tiny_train_cfg.paths.output_dir) / "metrics.json").read_text())
    assert saved["status"] == "ok" and saved["train/skipped_steps"] == 1.0


def test_gradients_that_stay_non_finite_stop_the_run_with_a_one_line_error(tiny_train_cfg, monkeypatch):
    monkeypatch.setattr("emotion_lab.models.classifier.MAX_SKIPPED_IN_A_ROW", 3)
    poison_steps(monkeypatch, None)
    with pytest.raises(TrainingDivergedError, match="3 steps in a row up to step 2 .* lower model.optimizer.lr"):
        train(tiny_train_cfg)


def test_an_option_the_chosen_loss_lacks_is_an_error(tiny_train_cfg, tmp_path, caplog):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="gamma"):
        compose_config("train", ["loss=ce", "loss.gamma=2"], tmp_path)
    cfg = compose_config(
        "train",
        [f"model.net.encoder_name={tiny_train_cfg.model.net.encoder_name}", "loss=ce", "+loss.gamma=2"],
        tmp_path,
    )
    from emotion_lab.utils.runtime import run_task

    with pytest.raises(SystemExit) as exit_info:
        run_task(train, cfg)
    assert exit_info.value.code == 2
    assert "loss: CrossEntropyLoss.__init__() got an unexpected keyword argument 'gamma'" in caplog.text


def test_a_new_loss_is_one_class_and_one_yaml(tiny_train_cfg, tmp_path, monkeypatch):
    """What the README's "Extending" shows: a class in the user's module, a YAML in their config folder."""
    (tmp_path / "my_losses.py").write_text(
        "import torch.nn.functional as F\n"
        "from torch import nn\n\n"
        "class MarginLoss(nn.Module):\n"
        "    def __init__(self, margin: float = 1.0):\n"
        "        super().__init__()\n"
        "        self.margin = margin\n"
        "    def forward(self, logits, target):\n"
        "        return F.multi_margin_loss(logits.float(), target, margin=self.margin)\n"
    )
    (tmp_path / "conf" / "loss").mkdir(parents=True)
    (tmp_path / "conf" / "loss" / "margin.yaml").write_text(
        "_target_: my_losses.MarginLoss\n_partial_: true\nmargin: 0.5\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = compose_config(
        "train",
        [
            f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
            "loss=margin",
            f"model.net.encoder_name={tiny_train_cfg.model.net.encoder_name}",
            "model.net.lstm_hidden=16",
            f"data.dir={tiny_train_cfg.data.dir}",
            "trainer.fast_dev_run=true",
            "export=false",
            *QUIET,
        ],
        tmp_path / "run",
    )
    metrics, objects = train(cfg)
    assert type(objects["model"].loss_fn).__name__ == "MarginLoss" and objects["model"].loss_fn.margin == 0.5
    assert math.isfinite(metrics["test/loss"])


@pytest.mark.parametrize(
    "name, test, error",
    [
        ("val/f1_weighted_best", False, None),
        (None, False, None),
        ("test/f1_weighted", True, None),
        ("val/f1_weigthed", True, "optimized_metric='val/f1_weigthed' is not a metric"),
        ("test/f1_weighted", False, "is a test metric, but test=false"),
    ],
)
def test_optimized_metric_must_be_a_metric_the_run_logs(name, test, error):
    cfg = OmegaConf.create({"optimized_metric": name, "test": test})
    if error is None:
        check_optimized_metric(cfg)
    else:
        with pytest.raises(ConfigError, match=error):
            check_optimized_metric(cfg)
