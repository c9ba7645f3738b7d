"""Checkpoints written whole or not at all.

Lightning's `TorchCheckpointIO` stages a save in `$TMPDIR` (fsspec's `mkstemp()`) and moves it over
the target: a rename only when `$TMPDIR` lies on the same filesystem as the checkpoint, otherwise a copy
over `last.ckpt` that a crash leaves half-written; and nothing is flushed to disk. `AtomicCheckpointIO`
writes a temporary file in the checkpoint's own folder, fsyncs it and renames it over the target.
`emotion_lab/conf/trainer/default.yaml` gives it to every trainer as a plugin.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from emotion_lab.utils.atomic import atomic_open


class AtomicCheckpointIO(TorchCheckpointIO):
    """`TorchCheckpointIO` whose local saves replace the old file in one rename; loading is Lightning's."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):  # remote storage: fsspec's own transaction
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        with atomic_open(path, "wb") as file:
            torch.save(checkpoint, file)
