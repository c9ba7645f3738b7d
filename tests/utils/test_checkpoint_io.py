"""AtomicCheckpointIO: a failed save keeps the old checkpoint, saves do not go through $TMPDIR, and every
trainer config uses it."""

import tempfile
from pathlib import Path

import hydra
import pytest
import torch
from omegaconf import open_dict

from emotion_lab.utils.checkpoint_io import AtomicCheckpointIO
from emotion_lab.utils.config import CONFIG_DIR
from tests.conftest import compose_config


class Unpicklable:
    """Fails torch.save once the tensors before it in the checkpoint are written."""

    def __reduce__(self):
        raise RuntimeError("disk full")


def test_a_save_that_fails_midway_keeps_the_previous_checkpoint_and_no_temporary_file(tmp_path):
    io, last = AtomicCheckpointIO(), tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"epoch": 1, "state_dict": {"w": torch.ones(3)}}, last)
    before = last.read_bytes()
    with pytest.raises(RuntimeError, match="disk full"):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(100_000)}, "broken": Unpicklable()}, last)
    assert last.read_bytes() == before
    assert [p.name for p in last.parent.iterdir()] == ["last.ckpt"]
    assert io.load_checkpoint(last, weights_only=True)["epoch"] == 1


def test_a_save_is_written_beside_its_target_not_in_tmpdir(tmp_path, monkeypatch):
    # Lightning's own save stages the file in $TMPDIR: with none there, it cannot save at all.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no_tmpdir"))
    io, last = AtomicCheckpointIO(), tmp_path / "last.ckpt"
    io.save_checkpoint({"epoch": 2}, last)
    assert io.load_checkpoint(last, weights_only=True) == {"epoch": 2}


def test_a_remote_path_keeps_lightnings_fsspec_save():
    io, path = AtomicCheckpointIO(), "memory://emotion_lab_test/last.ckpt"
    io.save_checkpoint({"epoch": 3}, path)
    assert io.load_checkpoint(path, weights_only=True) == {"epoch": 3}
    io.remove_checkpoint(path)


@pytest.mark.parametrize("trainer", sorted(p.stem for p in (Path(CONFIG_DIR) / "trainer").glob("*.yaml")))
def test_every_trainer_config_saves_checkpoints_atomically(tmp_path, trainer):
    cfg = compose_config("train", [f"trainer={trainer}"], tmp_path)
    with open_dict(cfg):
        cfg.trainer.accelerator = "cpu"  # the GPU configs, built on any machine
    built = hydra.utils.instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
    assert isinstance(built.strategy.checkpoint_io, AtomicCheckpointIO)
