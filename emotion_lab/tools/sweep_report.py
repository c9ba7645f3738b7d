"""Summarise a multirun: one row per trial, best first.

    python -m emotion_lab.tools.sweep_report outputs/train/multiruns/<time>

Reads each trial folder's `.hydra/overrides.yaml` and `metrics.json` and writes
`sweep_summary.md` and `sweep_summary.csv` into the multirun folder (and prints the Markdown).
Validation metrics are those of the checkpoint the trial selected. Complete trials come first, best
first, then pruned ones (with the scores they had when stopped), then the rest: a failed trial with
its reason, a trial without metrics as the sweep's stored study records it (interrupted, running) or
as incomplete. The Markdown names the overrides every trial shares once, above the table, and shows
each trial's own with 4 significant digits; the CSV keeps every trial's full overrides, exactly as
launched. TensorBoard's HPARAMS tab shows the same trials:
`tensorboard --logdir MULTIRUN_DIR`.

The stored study is read only where the folder holds it (its `optuna.journal`, or a sqlite file inside
it), and opened read-only. A study.yaml naming anything else (a file elsewhere, a database server) is
left alone with one line; `--storage URL` reads that storage, because the user named it.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from emotion_lab.errors import UserInputError
from emotion_lab.reporting.sweeps import COLUMNS, STORAGE_HELP, collect, read_study, to_markdown
from emotion_lab.utils.atomic import atomic_open, write_text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("multirun_dir", type=Path)
    parser.add_argument("--storage", metavar="URL", help=STORAGE_HELP)
    args = parser.parse_args(argv)
    if not args.multirun_dir.is_dir():
        print(f"error: {args.multirun_dir}: not a folder (expected outputs/<task>/multiruns/<time>)", file=sys.stderr)
        return 2
    try:
        study = read_study(args.multirun_dir, args.storage)
    except UserInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    rows = collect(args.multirun_dir, study)
    if not rows:
        print(f"error: {args.multirun_dir}: no trial folders (0/, 1/, ...) inside", file=sys.stderr)
        return 2
    table = to_markdown(rows)
    write_text(args.multirun_dir / "sweep_summary.md", table)
    with atomic_open(args.multirun_dir / "sweep_summary.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({**row, "overrides": " ".join(row["overrides"])} for row in rows)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
