"""Teacher logits per split, computed once and tied to the teachers and the data they came from.

One safetensors file holds, for each split, the logits of every teacher (teachers x sentences x
classes, in the split's order) and, as metadata, the sha256 of each teacher checkpoint, a hash of each
split's sentences and labels, and the label names. `refresh` recomputes the file when a teacher or the
data changed and reuses it otherwise; a student's datamodule refuses a file made on other data or for
another label set, naming the command that makes a matching one.
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
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from emotion_lab.data.labels import LABELS
from emotion_lab.errors import UserInputError, first_line
from emotion_lab.models.embedded import sha256_of

log = logging.getLogger(__name__)

FORMAT = 1
MAKE_HINT = "python -m emotion_lab.tools.teacher_logits TEACHER.ckpt [...] --out {path}"


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
            raise TeacherLogitsError(
                f"data.teacher_logits={str(path)!r}: no such file; make it first with " + MAKE_HINT.format(path=path)
            )
        try:
            tensors = load_file(path)
            from safetensors import safe_open

            with safe_open(path, "pt") as handle:
                header = handle.metadata() or {}
            meta = json.loads(header["meta"]) if header.get("format") == str(FORMAT) else None
        except (SafetensorError, OSError, KeyError, ValueError) as err:
            raise TeacherLogitsError(
                f"{path}: not a teacher-logits file ({first_line(err)}); remake it with " + MAKE_HINT.format(path=path)
            ) from None
        if meta is None:
            raise TeacherLogitsError(
                f"{path}: written by another version; remake it with " + MAKE_HINT.format(path=path)
            )
        return cls(tensors, meta["teachers"], meta["data_hashes"], meta["labels"])

    def for_split(self, split: str, texts: Sequence[str], labels: Sequence[int], path: str | Path) -> torch.Tensor:
        """This split's logits as sentences x teachers x classes, if they were made on exactly these
        sentences and labels with this project's label set; else one line naming what to rerun."""
        remake = MAKE_HINT.format(path=path)
        if list(self.labels) != list(LABELS):
            raise TeacherLogitsError(
                f"{path}: its teachers predict {self.labels}, not {list(LABELS)}; remake it with {remake} "
                "on teachers trained with this label set"
            )
        if split not in self.logits:
            raise TeacherLogitsError(f"{path}: holds no logits for the {split} split; remake it with {remake}")
        if self.data_hashes.get(split) != split_hash(texts, labels):
            raise TeacherLogitsError(
                f"{path}: made on other {split} data than this run's ({len(texts)} sentences; "
                f"data.limit_per_split, data.dir and the data files must match); remake it with {remake}"
            )
        return self.logits[split].transpose(0, 1).contiguous()


@torch.no_grad()
def teacher_logits(
    checkpoint: Path,
    texts: Sequence[str],
    device: str = "cpu",
    batch_size: int = 128,
    trusted_modules: Sequence[str] = (),
) -> torch.Tensor:
    """One teacher's raw logits (no temperature) for `texts`, in their order."""
    from emotion_lab.models.classifier import load_classifier
    from emotion_lab.models.encoder import load_tokenizer

    model = load_classifier(checkpoint, trusted_modules=trusted_modules).to(device)
    tokenizer = load_tokenizer(model.net.config["encoder_name"])
    max_length = int(model.net.config.get("max_length", 128))
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths batch with little padding
    out = torch.empty(len(texts), len(LABELS))
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda"))
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        batch = tokenizer(
            [texts[i] for i in rows], truncation=True, max_length=max_length, padding=True, return_tensors="pt"
        ).to(device)
        with autocast:
            logits = model(batch["input_ids"], batch["attention_mask"])
        out[rows] = logits.float().cpu()
    return out


def refresh(
    checkpoints: Sequence[Path],
    splits: dict[str, tuple[Sequence[str], Sequence[int]]],
    out: Path,
    device: str = "cpu",
    batch_size: int = 128,
    trusted_modules: Sequence[str] = (),
) -> tuple[TeacherLogits, bool]:
    """The teacher logits of `splits` at `out`: reused if made by these checkpoints on this data, else
    computed and written. Returns them and whether they were (re)computed."""
    missing = [str(c) for c in checkpoints if not Path(c).is_file()]
    if missing:
        raise TeacherLogitsError(f"teacher checkpoint {missing[0]!r}: no such file; train the teacher first")
    teachers = [{"checkpoint": Path(c).name, "sha256": sha256_of(Path(c))} for c in checkpoints]
    hashes = {split: split_hash(texts, labels) for split, (texts, labels) in splits.items()}
    if out.is_file():
        try:
            cached = TeacherLogits.load(out)
        except TeacherLogitsError as err:
            log.info("recomputing teacher logits: %s", err)
        else:
            same_teachers = [t["sha256"] for t in cached.teachers] == [t["sha256"] for t in teachers]
            if same_teachers and cached.data_hashes == hashes and cached.labels == list(LABELS):
                return cached, False
            log.info("recomputing teacher logits: %s changed", "the data" if same_teachers else "a teacher")
    logits = {
        split: torch.stack([teacher_logits(Path(c), texts, device, batch_size, trusted_modules) for c in checkpoints])
        for split, (texts, _) in splits.items()
    }
    result = TeacherLogits(logits, teachers, hashes, list(LABELS))
    result.save(out)
    return result, True
