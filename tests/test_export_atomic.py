"""export swaps a model folder in whole: a failed export leaves the old folder byte for byte, a finished
one replaces it, and a folder that is not a model's is never replaced."""

import shutil
from pathlib import Path

import pytest
import torch

import emotion_lab.inference.onnx
from emotion_lab.errors import UserInputError
from emotion_lab.inference.export import export, model_card
from emotion_lab.inference.predictor import EmotionPredictor


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every file's bytes (None for a folder) under `folder`, by relative path."""
    return {str(p.relative_to(folder)): None if p.is_dir() else p.read_bytes() for p in folder.rglob("*")}


@pytest.fixture
def old_folder(tiny_onnx_model, tmp_path) -> Path:
    """An exported model folder with its ONNX files, alone in its parent."""
    return Path(shutil.copytree(tiny_onnx_model, tmp_path / "exports" / "model"))


@pytest.fixture
def other_model(tiny_model, tmp_path) -> Path:
    """Another model folder (its temperature differs): exporting it over `old_folder` changes every file."""
    predictor = EmotionPredictor.from_pretrained(tiny_model)
    predictor.temperature = 0.7
    with torch.no_grad():
        for weight in predictor.net.parameters():
            weight.add_(0.01)
    return predictor.save_pretrained(tmp_path / "other" / "model")


def fail_after(original, message):
    def failing(*args, **kwargs):
        original(*args, **kwargs)  # the files are written, then the export stops
        raise OSError(message)

    return failing


@pytest.mark.parametrize("stage", ["save", "onnx"])
def test_an_export_that_fails_midway_leaves_the_old_folder_as_it_was(old_folder, other_model, monkeypatch, stage):
    before = snapshot(old_folder)
    if stage == "save":
        monkeypatch.setattr(EmotionPredictor, "save_pretrained", fail_after(EmotionPredictor.save_pretrained, "full"))
    else:
        onnx = emotion_lab.inference.onnx
        monkeypatch.setattr(onnx, "export_onnx", fail_after(onnx.export_onnx, "full"))
    with pytest.raises(OSError, match="full"):
        export(other_model, old_folder, onnx=True)
    assert snapshot(old_folder) == before
    assert [p.name for p in old_folder.parent.iterdir()] == ["model"]  # no half-written sibling left


def test_adding_onnx_in_place_that_fails_leaves_the_folder_as_it_was(old_folder, monkeypatch):
    before = snapshot(old_folder)
    monkeypatch.setattr(emotion_lab.inference.onnx, "quantize_onnx", fail_after(lambda *a: None, "no int8"))
    with pytest.raises(OSError, match="no int8"):
        export(old_folder, old_folder, onnx=True)
    assert snapshot(old_folder) == before
    assert [p.name for p in old_folder.parent.iterdir()] == ["model"]


def test_a_finished_re_export_replaces_the_folder(old_folder, other_model, tmp_path):
    (old_folder / "stale.txt").write_text("from the old export")
    export(other_model, old_folder, onnx=False)
    fresh = export(other_model, tmp_path / "fresh", onnx=False)
    assert snapshot(old_folder) == snapshot(fresh)  # no ONNX graphs of the old weights, nothing stale
    assert [p.name for p in old_folder.parent.iterdir()] == ["model"]
    assert (old_folder.stat().st_mode & 0o777) == 0o755  # not mkdtemp's private 0700


def test_a_folder_that_is_not_a_model_folder_is_never_replaced(tiny_model, tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("keep me")
    with pytest.raises(UserInputError, match=r"not a model folder \(no emotion_lab.json\)"):
        export(tiny_model, notes)
    assert (notes / "todo.txt").read_text() == "keep me" and len(list(notes.iterdir())) == 1
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserInputError, match="a file, not a folder"):
        export(tiny_model, tmp_path / "file")


def test_a_checkpoint_inside_the_folder_it_would_replace_is_refused(old_folder):
    (old_folder / "best.ckpt").write_bytes(b"a checkpoint")
    with pytest.raises(UserInputError, match=r"best.ckpt: inside out=.*, which export replaces"):
        export(old_folder / "best.ckpt", old_folder)
    assert (old_folder / "best.ckpt").read_bytes() == b"a checkpoint"


def test_the_model_card_names_the_checkpoint_file_not_where_it_lay(tiny_model):
    card = model_card(EmotionPredictor.from_pretrained(tiny_model), Path("/home/me/runs/x/best.ckpt"), None, "hub")
    assert "- exported from: `best.ckpt`" in card and "/home/me" not in card
