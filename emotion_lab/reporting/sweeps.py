"""A multirun as rows: each trial's overrides, metrics and status (from its folder and the stored study),
best first; as Markdown and CSV. The command is emotion_lab.tools.sweep_report; report.py embeds it."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import optuna
from omegaconf import OmegaConf

from emotion_lab.labels import LABELS
from emotion_lab.sweeps.study import StudyOutsideFolder, stored_study, trial_status

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
