"""Hydra/OmegaConf plumbing shared by the entry points and the tests."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = str(PROJECT_ROOT / "conf")

# `${project_root:}` in conf/paths: the checkout's root, wherever the command runs from.
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
        return "bf16-mixed" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "32-true"
    return "32-true"


# `${mixed_precision:${trainer.accelerator}}` in conf/: see mixed_precision.
if not OmegaConf.has_resolver("mixed_precision"):
    OmegaConf.register_new_resolver("mixed_precision", mixed_precision)
