"""Launchers that come with an extra: a sweep that names one not installed stops in one line, before
Hydra's composition error (which lists the launchers it found, not what to install)."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

# hydra/launcher=<name>: the module it needs and the extra that installs it (ray checks itself, on start).
LAUNCHER_EXTRAS = {
    "submitit_local": ("hydra_plugins.hydra_submitit_launcher", "slurm"),
    "submitit_slurm": ("hydra_plugins.hydra_submitit_launcher", "slurm"),
}


def missing_launcher(overrides: Sequence[str]) -> str | None:
    """The one line to print when a `hydra/launcher=<name>` override names a launcher whose extra is not
    installed, else None."""
    for override in overrides:
        key, _, name = override.partition("=")
        if key.lstrip("+~") == "hydra/launcher" and name in LAUNCHER_EXTRAS:
            module, extra = LAUNCHER_EXTRAS[name]
            if importlib.util.find_spec(module) is None:
                return f"hydra/launcher={name} needs the {extra} extra: pip install 'emotion_lab[{extra}]'"
    return None
