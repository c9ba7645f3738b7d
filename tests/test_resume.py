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
    """Interrupts training at the start of an epoch, as Ctrl-C or a scheduler's SIGTERM would."""

    def __init__(self, epoch: int, how: str) -> None:
        self.epoch, self.how = epoch, how

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            if self.how == "sigterm":
                os.kill(os.getpid(), signal.SIGTERM)  # Lightning's handler: stop at the next batch
            else:
                raise KeyboardInterrupt


def weights(objects) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in objects["model"].parameters()])


@pytest.mark.slow
def test_interrupted_between_epochs_and_resumed_equals_uninterrupted(tmp_path, data_dir, tiny_encoder, monkeypatch):
    straight_metrics, straight = train(run_cfg(tmp_path, data_dir, tiny_encoder, "straight"))

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
    assert resumed["trainer"].current_epoch == straight["trainer"].current_epoch == 2
    assert torch.allclose(weights(resumed), weights(straight), atol=1e-6)
    for key in ("val/f1_weighted", "val/f1_macro", "val/loss", "val/f1_weighted_best"):
        assert resumed_metrics[key] == pytest.approx(straight_metrics[key], abs=1e-6), key


@pytest.mark.slow
def test_sigterm_mid_epoch_leaves_a_checkpoint_the_run_resumes_from(tmp_path, data_dir, tiny_encoder, monkeypatch):
    import emotion_lab.train as train_module

    original = train_module.instantiate_callbacks
    monkeypatch.setattr(train_module, "instantiate_callbacks", lambda cfg: [*original(cfg), StopAt(1, "sigterm")])
    with pytest.raises(SIGTERMException):
        train(run_cfg(tmp_path, data_dir, tiny_encoder, "stopped"))
    monkeypatch.setattr(train_module, "instantiate_callbacks", original)
    last = tmp_path / "train" / "runs" / "stopped" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] > 8  # saved after the signal, into epoch 1
    _, resumed = train(run_cfg(tmp_path, data_dir, tiny_encoder, "again", f"ckpt_path={last}"))
    assert resumed["trainer"].current_epoch == 2


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
