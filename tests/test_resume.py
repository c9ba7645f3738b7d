"""Resuming: `ckpt_path` finds the interrupted run, continues in its folder, and ends where an
uninterrupted run ends; Ctrl-C and SIGTERM leave a checkpoint to resume from."""

import os
import signal
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException

from emotion_lab.errors import ConfigError
from emotion_lab.train import train
from tests.conftest import QUIET, compose_config, tiny_overrides


def run_cfg(tmp_path, data_dir, tiny_encoder, name, *extra):
    """A 2-epoch tiny run in its own folder under tmp_path/train/runs/, as Hydra would lay it out."""
    out = tmp_path / "train" / "runs" / name
    (out / ".hydra").mkdir(parents=True)
    overrides = [
        *tiny_overrides(tiny_encoder, data_dir),
        "trainer.max_epochs=2",
        f"paths.log_dir={tmp_path}",
        "callbacks.early_stopping=null",
        "test=false",
        "export=false",
        *QUIET,
        *extra,
    ]
    return compose_config("train", overrides, out)


class StopAt(L.Callback):
    """Interrupts training as Ctrl-C or a scheduler's SIGTERM would: at the start of an epoch, or after
    training batch `batch` of it."""

    def __init__(self, epoch: int, how: str, batch: int | None = None) -> None:
        self.epoch, self.how, self.batch = epoch, how, batch

    def _stop(self) -> None:
        if self.how == "sigterm":
            os.kill(os.getpid(), signal.SIGTERM)  # Lightning's handler: stop once this batch is done
        else:
            raise KeyboardInterrupt

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch and self.batch is None:
            self._stop()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            self._stop()


@pytest.fixture(scope="module")
def straight(tmp_path_factory, data_dir, tiny_encoder):
    """The uninterrupted 2-epoch run the interrupted ones must end like: its metrics and last checkpoint."""
    root = tmp_path_factory.mktemp("straight")
    metrics, objects = train(run_cfg(root, data_dir, tiny_encoder, "straight"))
    assert objects["trainer"].current_epoch == 2
    return metrics, torch.load(root / "train" / "runs" / "straight" / "checkpoints" / "last.ckpt", weights_only=True)


def assert_ends_like(straight, resumed_metrics, last_ckpt: Path) -> None:
    """Weights, optimizer state and validation metrics of the resumed run equal the uninterrupted run's."""
    straight_metrics, straight_ckpt = straight
    resumed_ckpt = torch.load(last_ckpt, weights_only=True)
    assert resumed_ckpt["global_step"] == straight_ckpt["global_step"]
    for name, tensor in straight_ckpt["state_dict"].items():
        assert torch.allclose(resumed_ckpt["state_dict"][name], tensor, atol=1e-6), name
    straight_moments = straight_ckpt["optimizer_states"][0]["state"]
    for index, state in resumed_ckpt["optimizer_states"][0]["state"].items():
        assert torch.allclose(state["exp_avg"], straight_moments[index]["exp_avg"], atol=1e-6), index
    for key in ("val/f1_weighted", "val/f1_macro", "val/loss", "val/f1_weighted_best", "val/temperature"):
        assert resumed_metrics[key] == pytest.approx(straight_metrics[key], abs=1e-6), key


@pytest.mark.slow
def test_interrupted_between_epochs_and_resumed_equals_uninterrupted(
    tmp_path, data_dir, tiny_encoder, monkeypatch, straight
):
    import emotion_lab.train as train_module

    original = train_module.instantiate_callbacks
    monkeypatch.setattr(train_module, "instantiate_callbacks", lambda cfg: [*original(cfg), StopAt(1, "ctrl-c")])
    with pytest.raises(SystemExit):
        train(run_cfg(tmp_path, data_dir, tiny_encoder, "interrupted"))
    monkeypatch.setattr(train_module, "instantiate_callbacks", original)
    interrupted = tmp_path / "train" / "runs" / "interrupted"
    assert (interrupted / "checkpoints" / "last.ckpt").is_file()

    # Resume with `last`, from a new run folder (Hydra makes one per command): it continues in the old one.
    resumed_cfg = run_cfg(tmp_path, data_dir, tiny_encoder, "resumed", "ckpt_path=last")
    resumed_metrics, resumed = train(resumed_cfg)
    assert resumed_cfg.paths.output_dir == str(interrupted)
    assert (tmp_path / "train" / "runs" / "resumed" / "resumed_in.txt").read_text().strip() == str(interrupted)
    assert resumed["trainer"].current_epoch == 2
    assert_ends_like(straight, resumed_metrics, interrupted / "checkpoints" / "last.ckpt")


@pytest.mark.slow
def test_sigterm_mid_epoch_resumes_at_the_next_batch_and_ends_like_an_uninterrupted_run(
    tmp_path, data_dir, tiny_encoder, monkeypatch, straight
):
    import emotion_lab.train as train_module

    # 60 sentences in batches of 8: 8 batches an epoch. Stop after batch 3 of epoch 1 (the 12th step).
    original = train_module.instantiate_callbacks
    stop = StopAt(1, "sigterm", batch=3)
    monkeypatch.setattr(train_module, "instantiate_callbacks", lambda cfg: [*original(cfg), stop])
    with pytest.raises(SIGTERMException):
        train(run_cfg(tmp_path, data_dir, tiny_encoder, "stopped"))
    monkeypatch.setattr(train_module, "instantiate_callbacks", original)
    last = tmp_path / "train" / "runs" / "stopped" / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint["global_step"] == 12
    # Where the training loader is in its epoch (the datamodule's state), loaded back on resume.
    assert checkpoint["EmotionDataModule"] == {"epoch": 1, "batches": 4}

    resumed_metrics, resumed = train(run_cfg(tmp_path, data_dir, tiny_encoder, "again", f"ckpt_path={last}"))
    assert resumed["trainer"].current_epoch == 2
    assert_ends_like(straight, resumed_metrics, last)


def test_same_seed_twice_gives_the_same_metrics(tmp_path, data_dir, tiny_encoder):
    first, _ = train(run_cfg(tmp_path, data_dir, tiny_encoder, "a", "trainer.max_epochs=1"))
    second, _ = train(run_cfg(tmp_path, data_dir, tiny_encoder, "b", "trainer.max_epochs=1"))
    assert first["val/loss"] == second["val/loss"] and first["val/f1_weighted"] == second["val/f1_weighted"]


def test_last_skips_runs_that_finished(tmp_path, data_dir, tiny_encoder):
    train(run_cfg(tmp_path, data_dir, tiny_encoder, "finished", "trainer.max_epochs=1"))
    assert (tmp_path / "train" / "runs" / "finished" / "checkpoints" / "last.ckpt").is_file()
    with pytest.raises(ConfigError, match="ckpt_path=last: no interrupted run of task 'train'"):
        train(run_cfg(tmp_path, data_dir, tiny_encoder, "again", "ckpt_path=last"))


@pytest.mark.parametrize("value", ["last", "missing/run", "missing.ckpt"])
def test_nothing_to_resume_is_a_clear_error_not_a_fresh_start(tmp_path, data_dir, tiny_encoder, value):
    cfg = run_cfg(
        tmp_path, data_dir, tiny_encoder, "new", f"ckpt_path={tmp_path / value if value != 'last' else value}"
    )
    with pytest.raises(ConfigError, match="ckpt_path="):
        train(cfg)
    assert not (Path(cfg.paths.output_dir) / "checkpoints").exists()


@pytest.mark.slow
def test_noise_resumes_mid_epoch_exactly(tmp_path, data_dir, tiny_encoder, monkeypatch, straight):
    """`data.noise` draws each epoch's noise from (seed, epoch, sentence): a run stopped mid-epoch and resumed
    sees the noise the uninterrupted one saw, and ends like it."""
    import emotion_lab.train as train_module

    noise = ["data.noise.enabled=true", "data.noise.p=1.0"]
    noisy_metrics, _ = train(run_cfg(tmp_path, data_dir, tiny_encoder, "noisy", *noise))
    noisy_last = tmp_path / "train" / "runs" / "noisy" / "checkpoints" / "last.ckpt"
    assert noisy_metrics["val/loss"] != straight[0]["val/loss"]  # the noise reached training
    original = train_module.instantiate_callbacks
    monkeypatch.setattr(train_module, "instantiate_callbacks", lambda cfg: [*original(cfg), StopAt(1, "sigterm", 3)])
    with pytest.raises(SIGTERMException):
        train(run_cfg(tmp_path, data_dir, tiny_encoder, "stopped", *noise))
    monkeypatch.setattr(train_module, "instantiate_callbacks", original)
    last = tmp_path / "train" / "runs" / "stopped" / "checkpoints" / "last.ckpt"
    resumed_metrics, _ = train(run_cfg(tmp_path, data_dir, tiny_encoder, "again", *noise, f"ckpt_path={last}"))
    assert_ends_like((noisy_metrics, torch.load(noisy_last, weights_only=True)), resumed_metrics, last)
