"""Hydra/OmegaConf plumbing shared by the entry points and the tests."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf, open_dict

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "conf")  # shipped inside the package

# `${project_root:}` in emotion_lab/conf/paths: the checkout's root, wherever the command runs from.
if not OmegaConf.has_resolver("project_root"):
    OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT))


def mixed_precision(accelerator: str) -> str:
    """The fastest safe Lightning precision for `accelerator`: bf16 autocast where the hardware runs
    bf16 natively (CPUs with AVX512-BF16/AMX, Ampere+ GPUs), fp16 on older GPUs, fp32 on older CPUs,
    where emulated bf16 is slower than fp32."""
    import torch

    if accelerator == "auto":
        accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    if accelerator in ("gpu", "cuda"):
        if torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
            return "16-mixed"
        return "bf16-mixed"
    if accelerator == "cpu":
        return "bf16-mixed" if cpu_has_native_bf16() else "32-true"
    return "32-true"


def cpu_has_native_bf16() -> bool:
    """bf16 matrix instructions in hardware (AVX512-BF16 or AMX). oneDNN's own check is true on any
    AVX-512 CPU, where bf16 is emulated and runs slower than fp32."""
    import torch

    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


# `${mixed_precision:${trainer.accelerator}}` in emotion_lab/conf/: see mixed_precision.
if not OmegaConf.has_resolver("mixed_precision"):
    OmegaConf.register_new_resolver("mixed_precision", mixed_precision)


def repo_relative(text: str) -> str:
    """`text` with this checkout's absolute paths written relative to it: a committed result names no machine."""
    text = text.replace(f"{PROJECT_ROOT}/", "").replace(str(PROJECT_ROOT), ".")  # the checkout before its parent
    return text.replace(f"{PROJECT_ROOT.parent}/", "../")


def compose_train(overrides: list[str], output_dir: Path) -> DictConfig:
    """The training config with `overrides`, as `python -m emotion_lab.train` composes it, into `output_dir`."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    GlobalHydra.instance().clear()
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg
