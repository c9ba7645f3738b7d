"""Compute (or reuse) teacher logits for distillation, and report the teachers' own validation and test F1.

    python -m emotion_lab.tools.teacher_logits outputs/teacher_mpnet/.../best.ckpt [more.ckpt ...] \\
        --out outputs/teachers/mpnet.safetensors

Several checkpoints form an ensemble (the loss averages their probabilities). The file is reused
while the checkpoints and the data are unchanged and recomputed otherwise (emotion_lab/data/teacher_logits.py).
A student trains on it with `loss=distill data.teacher_logits=<the file>` (experiment=distilled_cpu).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from sklearn.metrics import f1_score

from emotion_lab.data.sources import configured_splits
from emotion_lab.data.teacher_logits import MAKE_HINT, TeacherLogits, TeacherLogitsError, split_hash
from emotion_lab.encoders.embedded import sha256_of
from emotion_lab.errors import ModelLoadError, UserInputError
from emotion_lab.inference.predictor import EmotionPredictor
from emotion_lab.labels import LABELS, NUM_CLASSES

log = logging.getLogger(__name__)


@torch.no_grad()
def teacher_logits(
    checkpoint: Path,
    texts: Sequence[str],
    device: str = "cpu",
    batch_size: int = 128,
    trusted_modules: Sequence[str] = (),
) -> torch.Tensor:
    """One teacher's raw logits (no temperature) for `texts`, in their order, at the max length it was
    trained with."""
    try:
        teacher = EmotionPredictor.from_checkpoint(checkpoint, trusted_modules=trusted_modules)
    except ModelLoadError as err:
        raise TeacherLogitsError(f"teacher {err}; a teacher must be trained on this label set: {MAKE_HINT}") from None
    teacher.net.to(device)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths batch with little padding
    out = torch.empty(len(texts), NUM_CLASSES)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda"))
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        batch = teacher.tokenizer(
            [texts[i] for i in rows], truncation=True, max_length=teacher.max_length, padding=True, return_tensors="pt"
        )
        with autocast:
            logits, _ = teacher.backend(batch["input_ids"], batch["attention_mask"])
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
            log.info("recomputing teacher logits: %s changed", "the data or labels" if same_teachers else "a teacher")
    logits = {
        split: torch.stack([teacher_logits(Path(c), texts, device, batch_size, trusted_modules) for c in checkpoints])
        for split, (texts, _) in splits.items()
    }
    result = TeacherLogits(logits, teachers, hashes, list(LABELS))
    result.save(out)
    return result, True


def load_data(data_dir: str | None, limit: int | None) -> dict[str, tuple[list[str], list[int]]]:
    """Every split as the student's datamodule reads it (emotion_lab/conf/data: data.dir, fallbacks, hub; the limit)."""
    splits, _ = configured_splits(data_dir, limit)
    return {split: (list(rows["text"]), list(rows["label"])) for split, rows in splits.items()}


def ensemble_scores(logits: torch.Tensor, labels: list[int]) -> dict[str, float]:
    """Weighted and macro F1 of the teachers' mean probability."""
    preds = torch.softmax(logits, dim=-1).mean(dim=0).argmax(-1).tolist()
    return {
        "f1_weighted": float(f1_score(labels, preds, average="weighted")),
        "f1_macro": float(f1_score(labels, preds, average="macro")),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m emotion_lab.tools.teacher_logits",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("checkpoints", nargs="+", type=Path, help="teacher checkpoints (.ckpt); several = an ensemble")
    parser.add_argument("--out", type=Path, required=True, help="the teacher-logits file to write or reuse")
    parser.add_argument(
        "--data-dir", help="a folder with train.txt, val.txt, test.txt (default: where training finds it)"
    )
    parser.add_argument("--limit-per-split", type=int, help="first N sentences of each split, as data.limit_per_split")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument(
        "--trust-module",
        action="append",
        default=[],
        metavar="MODULE",
        help="a module besides emotion_lab whose EmotionNet subclasses a teacher may name",
    )
    args = parser.parse_args(argv)
    try:
        splits = load_data(args.data_dir, args.limit_per_split)
        result, computed = refresh(args.checkpoints, splits, args.out, args.device, args.batch_size, args.trust_module)
    except UserInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    scores = {
        split: ensemble_scores(result.logits[split], list(splits[split][1]))
        for split in ("validation", "test")
        if split in result.logits
    }
    print(json.dumps({"out": str(args.out), "computed": computed, "teachers": result.teachers, **scores}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
