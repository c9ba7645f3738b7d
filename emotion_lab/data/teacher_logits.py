"""Teacher logits per split, computed once and tied to the teachers and the data they came from.

One safetensors file holds, for each split, the logits of every teacher (teachers x sentences x
classes, in the split's order) and, as metadata, the sha256 of each teacher checkpoint, a hash of each
split's sentences and labels, and the label names. The tool that writes it (emotion_lab.tools.teacher_logits)
recomputes it when a teacher or the data changed and reuses it otherwise; a student's datamodule
refuses a file made on other data or for another label set, naming the commands that make a matching
one. The student checks data and labels; a retrained teacher is the tool's to notice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from emotion_lab.errors import UserInputError, first_line
from emotion_lab.labels import LABELS, NUM_CLASSES
from emotion_lab.utils.config import needs_checkout

log = logging.getLogger(__name__)

FORMAT = 1
MAKE_HINT = (
    "train a teacher on this data (python -m emotion_lab.train experiment=teacher_mpnet), run python -m "
    "emotion_lab.tools.teacher_logits <its run>/checkpoints/epoch*.ckpt --out <a file of yours>, and set "
    "data.teacher_logits to that file"
)


class TeacherLogitsError(UserInputError, ValueError):
    """Teacher logits are missing, unreadable, or were made on other data or labels."""


def split_hash(texts: Sequence[str], labels: Sequence[int]) -> str:
    """A hash of a split's sentences and labels, in order."""
    digest = hashlib.sha256()
    for text, label in zip(texts, labels):
        digest.update(f"{int(label)}\t{text}\n".encode())
    return digest.hexdigest()


@dataclass
class TeacherLogits:
    logits: dict[str, torch.Tensor]  # split -> teachers x sentences x classes
    teachers: list[dict[str, str]]  # {"checkpoint": file name, "sha256": ...}, one per teacher
    data_hashes: dict[str, str]  # split -> split_hash
    labels: list[str]

    def save(self, path: Path) -> None:
        """Write atomically: a reader never sees half a file."""
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"teachers": self.teachers, "data_hashes": self.data_hashes, "labels": self.labels}
        partial = path.with_name(path.name + ".partial")
        tensors = {split: logits.float().contiguous() for split, logits in self.logits.items()}
        save_file(tensors, partial, metadata={"format": str(FORMAT), "meta": json.dumps(meta)})
        os.replace(partial, path)

    @classmethod
    def load(cls, path: str | Path) -> TeacherLogits:
        path = Path(path)
        if not path.is_file():
            if missing := needs_checkout(path):  # a committed file (experiment=distilled_cpu's), asked for installed
                raise TeacherLogitsError(f"data.teacher_logits: {missing}")
            raise TeacherLogitsError(f"data.teacher_logits={str(path)!r}: no such file; make it first: {MAKE_HINT}")
        try:
            tensors = load_file(path)
            with safe_open(path, "pt") as handle:
                header = handle.metadata() or {}
            if header.get("format") != str(FORMAT):
                raise TeacherLogitsError(f"{path}: written by another version of emotion_lab; remake it: {MAKE_HINT}")
            meta = json.loads(header["meta"])
            result = cls(tensors, list(meta["teachers"]), dict(meta["data_hashes"]), list(meta["labels"]))
        except (SafetensorError, OSError, KeyError, TypeError, ValueError) as err:
            raise TeacherLogitsError(
                f"{path}: not a teacher-logits file ({first_line(err)}); remake it: {MAKE_HINT}"
            ) from None
        teachers = {split: tuple(logits.shape[:1]) for split, logits in result.logits.items()}
        if any(logits.dim() != 3 or len(logits) != len(result.teachers) for logits in result.logits.values()):
            raise TeacherLogitsError(
                f"{path}: {len(result.teachers)} teachers named but logits of {teachers}; remake it: {MAKE_HINT}"
            )
        return result

    def for_split(self, split: str, texts: Sequence[str], labels: Sequence[int], path: str | Path) -> torch.Tensor:
        """This split's logits as sentences x teachers x classes, if they were made on exactly these
        sentences and labels with this project's label set; else one line naming what to do."""
        if list(self.labels) != list(LABELS):
            raise TeacherLogitsError(f"{path}: its teachers predict {self.labels}, not {list(LABELS)}: {MAKE_HINT}")
        if split not in self.logits:
            raise TeacherLogitsError(f"{path}: holds no logits for the {split} split; remake it: {MAKE_HINT}")
        if self.data_hashes.get(split) != split_hash(texts, labels):
            raise TeacherLogitsError(
                f"{path}: made on other {split} data than this run's {len(texts)} sentences (data.dir, the data "
                f"files and data.limit_per_split must be those it was made on): {MAKE_HINT}"
            )
        logits = self.logits[split]
        if logits.shape[1:] != (len(texts), NUM_CLASSES) or not torch.isfinite(logits).all():
            raise TeacherLogitsError(
                f"{path}: {split} logits of shape {tuple(logits.shape)} or not finite, expected teachers x "
                f"{len(texts)} x {NUM_CLASSES}; remake it: {MAKE_HINT}"
            )
        return logits.transpose(0, 1).contiguous()
