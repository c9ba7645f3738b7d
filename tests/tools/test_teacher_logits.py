"""Teacher logits: computed once per split, reused while teachers and data are unchanged, refused on other data."""

import json
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict

from emotion_lab.data.teacher_logits import TeacherLogits, TeacherLogitsError, split_hash
from emotion_lab.errors import ConfigError
from emotion_lab.labels import LABELS
from emotion_lab.tools import teacher_logits as tl
from emotion_lab.tools.teacher_logits import main as teacher_logits_main
from emotion_lab.train import train

SPLITS = {"train": (["i feel sad", "i feel glad"], [0, 1]), "validation": (["so angry"], [3])}


@pytest.fixture
def counted(monkeypatch):
    """Stand-in teachers: logits from the checkpoint file's first byte, and a count of the forward runs."""
    calls = []

    def fake(checkpoint, texts, device="cpu", batch_size=128, trusted_modules=()):
        calls.append(Path(checkpoint).name)
        return torch.full((len(texts), len(LABELS)), float(Path(checkpoint).read_bytes()[0]))

    monkeypatch.setattr(tl, "teacher_logits", fake)
    return calls


def test_logits_are_reused_until_the_teacher_or_the_data_changes(tmp_path, counted):
    ckpt, out = tmp_path / "teacher.ckpt", tmp_path / "logits.safetensors"
    ckpt.write_bytes(b"\x01weights")
    first, computed = tl.refresh([ckpt], SPLITS, out)
    assert computed and counted == ["teacher.ckpt"] * 2  # one run per split
    assert first.logits["train"].shape == (1, 2, len(LABELS))
    _, computed = tl.refresh([ckpt], SPLITS, out)
    assert not computed and len(counted) == 2
    ckpt.write_bytes(b"\x02weights")  # retrained teacher
    changed, computed = tl.refresh([ckpt], SPLITS, out)
    assert computed and changed.logits["train"][0, 0, 0] == 2.0
    edited = {**SPLITS, "train": (["i feel sad", "i feel happy"], [0, 1])}
    _, computed = tl.refresh([ckpt], edited, out)
    assert computed and len(counted) == 6
    assert TeacherLogits.load(out).data_hashes["train"] == split_hash(*edited["train"])


def test_an_ensemble_keeps_every_teachers_logits(tmp_path, counted):
    ckpts = [tmp_path / "a.ckpt", tmp_path / "b.ckpt"]
    ckpts[0].write_bytes(b"\x01")
    ckpts[1].write_bytes(b"\x05")
    result, _ = tl.refresh(ckpts, SPLITS, tmp_path / "out.safetensors")
    per_sentence = TeacherLogits.load(tmp_path / "out.safetensors").for_split("train", *SPLITS["train"], "x")
    assert per_sentence.shape == (2, 2, len(LABELS)) and per_sentence[0, :, 0].tolist() == [1.0, 5.0]
    assert [t["checkpoint"] for t in result.teachers] == ["a.ckpt", "b.ckpt"]


def test_logits_from_other_data_labels_or_nowhere_are_refused_with_the_command(tmp_path, counted):
    ckpt, out = tmp_path / "teacher.ckpt", tmp_path / "logits.safetensors"
    ckpt.write_bytes(b"\x01")
    tl.refresh([ckpt], SPLITS, out)
    loaded = TeacherLogits.load(out)
    with pytest.raises(TeacherLogitsError, match="made on other train data.*-m emotion_lab.tools.teacher_logits"):
        loaded.for_split("train", ["i feel sad"], [0], out)
    loaded.labels = ["neg", "pos"]
    with pytest.raises(TeacherLogitsError, match=r"predict \['neg', 'pos'\]"):
        loaded.for_split("train", *SPLITS["train"], out)
    with pytest.raises(
        TeacherLogitsError, match="no such file; make it first: train a teacher.*teacher_mpnet.*tools.teacher_logits"
    ):
        TeacherLogits.load(tmp_path / "missing.safetensors")
    (tmp_path / "bad.safetensors").write_text("not a tensor file")
    with pytest.raises(TeacherLogitsError, match="not a teacher-logits file"):
        TeacherLogits.load(tmp_path / "bad.safetensors")
    with pytest.raises(TeacherLogitsError, match="no such file; train the teacher first"):
        tl.refresh([tmp_path / "nope.ckpt"], SPLITS, out)


def test_distillation_without_teacher_logits_names_the_command(tiny_train_cfg):
    with open_dict(tiny_train_cfg):
        tiny_train_cfg.loss = {"_target_": "emotion_lab.models.losses.DistillationLoss", "_partial_": True}
    with pytest.raises(ConfigError, match="loss=distill needs data.teacher_logits.*tools.teacher_logits"):
        train(tiny_train_cfg)


def test_a_teacher_trains_and_a_student_distils_from_its_logits(tiny_train_cfg, tmp_path, data_dir, capsys):
    """The whole route: teacher run -> teacher_logits tool -> student run with loss=distill."""
    with open_dict(tiny_train_cfg):
        tiny_train_cfg.export = False
    train(tiny_train_cfg)
    teacher = sorted((Path(tiny_train_cfg.paths.output_dir) / "checkpoints").glob("epoch*.ckpt"))[0]
    out = tmp_path / "teacher_logits.safetensors"
    capsys.readouterr()  # training's model summary
    assert teacher_logits_main([str(teacher), str(teacher), "--out", str(out), "--data-dir", str(data_dir)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["computed"] and set(report["validation"]) == {"f1_weighted", "f1_macro"}
    train_rows = TeacherLogits.load(out).logits["train"]
    assert train_rows.shape == (2, 60, len(LABELS)) and torch.equal(train_rows[0], train_rows[1])

    from emotion_lab.models import losses

    seen = []
    original = losses.DistillationLoss.forward

    def spy(self, logits, target, teacher_logits=None):
        seen.append(None if teacher_logits is None else tuple(teacher_logits.shape))
        return original(self, logits, target, teacher_logits)

    student_cfg = tiny_train_cfg.copy()
    with open_dict(student_cfg):
        student_cfg.paths.output_dir = str(tmp_path / "student")
        student_cfg.loss = {"_target_": "emotion_lab.models.losses.DistillationLoss", "_partial_": True}
        student_cfg.data.teacher_logits = str(out)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(losses.DistillationLoss, "forward", spy)
        metrics, _ = train(student_cfg)
    assert (8, 2, len(LABELS)) in seen  # training batches carried both teachers' logits
    assert None in seen  # evaluation batches did not
    assert "test/f1_weighted" in metrics


def test_a_teacher_trained_on_other_labels_is_refused_with_what_to_run(tmp_path):
    ckpt = tmp_path / "other_labels.ckpt"
    net = {"_target_": "emotion_lab.models.networks.BiLSTMAttentionNet"}
    torch.save({"hyper_parameters": {"net": net}, "state_dict": {}, "id2label": {0: "neg", 1: "pos"}}, ckpt)
    with pytest.raises(TeacherLogitsError, match="differ from emotion_lab's.*trained on this label set.*teacher_mpnet"):
        tl.refresh([ckpt], SPLITS, tmp_path / "out.safetensors")


def test_logits_of_the_wrong_shape_or_not_finite_are_refused(tmp_path, counted):
    ckpt, out = tmp_path / "teacher.ckpt", tmp_path / "logits.safetensors"
    ckpt.write_bytes(b"\x01")
    result, _ = tl.refresh([ckpt], SPLITS, out)
    result.logits["train"][0, 1, 2] = float("nan")
    result.save(out)
    with pytest.raises(TeacherLogitsError, match="or not finite"):
        TeacherLogits.load(out).for_split("train", *SPLITS["train"], out)
    result.logits["train"] = torch.zeros(2, 2, len(LABELS))  # two teachers' logits, one teacher named
    result.save(out)
    with pytest.raises(TeacherLogitsError, match="1 teachers named"):
        TeacherLogits.load(out)


def test_teacher_logits_without_a_distillation_loss_or_with_augmentation_are_config_errors(tiny_encoder):
    from types import SimpleNamespace

    from emotion_lab.data.datamodule import EmotionDataModule
    from emotion_lab.models.classifier import EmotionClassifier
    from emotion_lab.models.losses import FocalLoss
    from emotion_lab.models.networks import BiLSTMAttentionNet

    model = EmotionClassifier(BiLSTMAttentionNet(tiny_encoder, lstm_hidden=8), loss=FocalLoss)
    with pytest.raises(ConfigError, match="'t.safetensors' is set but loss FocalLoss does not use a teacher"):
        model._check_teacher("t.safetensors", "fit")
    model._check_teacher("t.safetensors", "test")  # evaluation batches do not use them: no error
    augment = SimpleNamespace(enabled=True)
    with pytest.raises(ConfigError, match="augmented copies and cached states carry no teacher logits"):
        EmotionDataModule("x", teacher_logits="f.safetensors", augment=augment)
    with pytest.raises(ConfigError, match="augmented copies and cached states carry no teacher logits"):
        EmotionDataModule("x", teacher_logits="f.safetensors", feature_cache={"enabled": True})
