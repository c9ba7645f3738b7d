"""Hydra/OmegaConf plumbing shared by the entry points and the tests."""

from __future__ import annotations

import re
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf, open_dict

from emotion_lab.errors import UserInputError

PACKAGE_DIR = Path(__file__).resolve().parents[1]
CONFIG_DIR = str(PACKAGE_DIR / "conf")  # shipped inside the package (a plain folder in the wheel too)


def _checkout() -> Path | None:
    """The repository this package runs from (a checkout, or an editable install of one); None when installed."""
    try:
        pyproject = (PACKAGE_DIR.parent / "pyproject.toml").read_text()
    except OSError:
        return None
    return PACKAGE_DIR.parent if re.search(r'^name = "emotion_lab"$', pyproject, re.MULTILINE) else None


CHECKOUT = _checkout()
# Where outputs/, the data fallback and the committed docs/ are looked for: the checkout, else (installed
# with `pip install .`) the working directory.
PROJECT_ROOT = CHECKOUT or Path.cwd()

# `${project_root:}` in emotion_lab/conf/paths: PROJECT_ROOT, wherever in a checkout the command runs from.
if not OmegaConf.has_resolver("project_root"):
    OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT))


def user_config_dirs() -> list[str]:
    """Hydra search path entries for the user's own configs: installed, `<working directory>/conf` where it
    exists (its local/default.yaml, its own experiments); in a checkout none (emotion_lab/conf/local serves)."""
    own = PROJECT_ROOT / "conf"
    return [f"file://{own}"] if CHECKOUT is None and own.is_dir() else []


# `hydra.searchpath: ${user_config_dirs:}` in emotion_lab/conf/train.yaml: see user_config_dirs.
if not OmegaConf.has_resolver("user_config_dirs"):
    OmegaConf.register_new_resolver("user_config_dirs", user_config_dirs)


class CheckoutRequiredError(UserInputError, FileNotFoundError):
    """A file the repository commits (docs/: results, teacher logits) that an installed copy does not have."""


def needs_checkout(path: str | Path) -> str | None:
    """For a missing `path` under PROJECT_ROOT/docs while installed: one line saying it needs a checkout of the
    repository. None for any other path (its own error applies)."""
    path = Path(path).absolute()
    if CHECKOUT is not None or path.exists() or not path.is_relative_to(PROJECT_ROOT / "docs"):
        return None
    return (
        f"{path.relative_to(PROJECT_ROOT)} not found: the emotion_lab repository commits it, so this needs a checkout "
        "of it, not the installed package (run from a clone's root, or pip install -e the clone)"
    )


def require_checkout(relative: str) -> Path:
    """PROJECT_ROOT / `relative`, a path the repository commits; CheckoutRequiredError (one line) where an
    installed copy lacks it."""
    path = PROJECT_ROOT / relative
    message = needs_checkout(path)
    if message:
        raise CheckoutRequiredError(message)
    return path


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
    """`text` with PROJECT_ROOT's absolute paths written relative to it: a committed result names no machine."""
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
