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
import sys
from pathlib import Path

import torch
from sklearn.metrics import f1_score

from emotion_lab.data.teacher_logits import refresh
from emotion_lab.errors import UserInputError
from emotion_lab.tools.bench import configured_splits


def load_data(data_dir: str | None, limit: int | None) -> dict[str, tuple[list[str], list[int]]]:
    """Every split as the student's datamodule reads it (conf/data: data.dir, fallbacks, hub; the limit)."""
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
    parser.add_argument("--data-dir", help="a folder with train.txt, val.txt, test.txt (default: as conf/data finds)")
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
