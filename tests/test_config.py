import pytest
import torch

from emotion_lab.bench import compose_train
from emotion_lab.config import mixed_precision


@pytest.fixture
def cpu_without_bf16(monkeypatch):
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)


def test_cpu_precision_follows_native_bf16(monkeypatch):
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    assert mixed_precision("cpu") == "bf16-mixed"
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert mixed_precision("cpu") == "32-true"  # emulated bf16 would be slower than fp32


def test_gpu_without_bf16_gets_fp16(monkeypatch, cpu_without_bf16):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert mixed_precision("gpu") == "16-mixed"
    assert mixed_precision("auto") == "16-mixed"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert mixed_precision("gpu") == "bf16-mixed"


def test_recipe_precision_is_resolved_per_machine(tmp_path, monkeypatch, cpu_without_bf16):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = compose_train(["experiment=best_cpu"], tmp_path)
    assert cfg.trainer.precision == "32-true"
    assert compose_train(["experiment=best_cpu", "trainer=gpu"], tmp_path).trainer.precision == "bf16-mixed"
