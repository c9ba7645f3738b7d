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
import json
import sys
from pathlib import Path
from typing import Any

import optuna
from omegaconf import OmegaConf

from emotion_lab.data.labels import LABELS
from emotion_lab.errors import UserInputError
from emotion_lab.sweeps.study import StudyOutsideFolder, stored_study, trial_status
from emotion_lab.utils.atomic import atomic_open, write_text

COLUMNS = [
    "trial",
    "status",
    "overrides",
    "val/f1_weighted",
    "val/f1_macro",
    *(f"val_f1/{label}" for label in LABELS),
    "epochs",
    "train_seconds",
]


STORAGE_HELP = (
    "the sweep's study, when its study.yaml names one outside the folder: a database URL "
    "(sqlite:///study.db, postgresql://...) or a journal file; only read"
)


def read_study(multirun_dir: Path, storage: str | None) -> optuna.Study | None:
    """The sweep's stored study, read-only (UserInputError when it cannot be read). A storage outside
    the folder that the user did not pass gets one line on stderr, and the report reads the trial folders."""
    try:
        return stored_study(multirun_dir, storage)
    except StudyOutsideFolder as note:
        print(f"note: {note}", file=sys.stderr)
        return None


def collect(multirun_dir: Path, study: optuna.Study | None) -> list[dict[str, Any]]:
    trials = sorted((p for p in multirun_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    # The study knows how trials without metrics ended (interrupted, running, failed); folders are trial numbers.
    stored = {t.number: trial_status(t) for t in study.get_trials(deepcopy=False)} if study else {}
    rows = []
    for trial in trials:
        overrides_file = trial / ".hydra" / "overrides.yaml"
        overrides = list(OmegaConf.load(overrides_file)) if overrides_file.is_file() else []
        metrics_file = trial / "metrics.json"
        unknown = {"status": stored.get(int(trial.name), "incomplete")}
        metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else unknown
        rows.append(
            {
                "trial": int(trial.name),
                "overrides": overrides,
                **{k: metrics.get(k) for k in COLUMNS[3:]},
                "status": metrics.get("status", "ok"),
            }
        )
    ok = [r for r in rows if r["status"] == "ok" and r["val/f1_weighted"] is not None]
    pruned = [r for r in rows if r["status"].startswith("pruned") and r["val/f1_weighted"] is not None]
    rest = [r for r in rows if r not in ok and r not in pruned]
    return sorted(ok, key=lambda r: -r["val/f1_weighted"]) + sorted(pruned, key=lambda r: -r["val/f1_weighted"]) + rest


def shared_overrides(rows: list[dict[str, Any]]) -> list[str]:
    """The overrides every trial was launched with (the command line's fixed part), in their order."""
    first, *others = [r["overrides"] for r in rows]
    return [o for o in first if all(o in trial for trial in others)]


def _short(override: str) -> str:
    """`key=value` with a float value cut to 4 significant digits: optuna writes all 17."""
    key, _, value = override.partition("=")
    try:
        number = float(value)
    except ValueError:
        return override
    return override if value.lstrip("-").isdigit() else f"{key}={number:.4g}"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if value <= 1.0 else f"{value:.0f}"
    return "" if value is None else str(value).replace("|", "\\|")


def to_markdown(rows: list[dict[str, Any]]) -> str:
    shared = shared_overrides(rows)
    head = ["trial", "status", "overrides", "val F1 w", "val F1 macro", *LABELS, "epochs", "train s"]
    lines = [f"Every trial: `{' '.join(shared)}`", ""] if shared else []
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        own = " ".join(_short(o) for o in row["overrides"] if o not in shared)
        lines.append("| " + " | ".join(_cell(own if c == "overrides" else row[c]) for c in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


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
