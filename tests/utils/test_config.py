import pytest
import torch
from omegaconf import OmegaConf

from emotion_lab.utils.config import compose_train, mixed_precision


def fake_cpu(monkeypatch, avx512_bf16: bool, amx: bool, onednn_bf16: bool = True) -> None:
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    # oneDNN says yes on any AVX-512 CPU, also where bf16 is only emulated: it must not decide.
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: onednn_bf16)


@pytest.fixture
def cpu_without_bf16(monkeypatch):
    fake_cpu(monkeypatch, avx512_bf16=False, amx=False)


@pytest.mark.parametrize(
    "avx512_bf16, amx, expected",
    [
        (True, True, "bf16-mixed"),  # Sapphire Rapids and later
        (True, False, "bf16-mixed"),  # Cooper Lake, Zen 4
        (False, False, "32-true"),  # AVX-512 without BF16 (Skylake-SP, Ice Lake): emulated bf16 is slower
    ],
)
def test_cpu_precision_follows_native_bf16(monkeypatch, avx512_bf16, amx, expected):
    fake_cpu(monkeypatch, avx512_bf16, amx)
    assert mixed_precision("cpu") == expected


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


def test_the_robust_recipe_is_the_recipe_with_noise_and_the_spelling_step(tmp_path):
    recipe, robust = (compose_train([f"experiment={name}"], tmp_path) for name in ("best_cpu", "robust_cpu"))
    assert robust.data.noise.enabled and robust.data.spelling
    assert not recipe.data.noise.enabled and not recipe.data.spelling
    for cfg in (recipe, robust):  # nothing else may differ, or the A/B it was chosen by does not hold
        cfg.data.noise.enabled, cfg.data.spelling, cfg.task_name = True, True, "-"
    assert OmegaConf.to_yaml(recipe) == OmegaConf.to_yaml(robust)
