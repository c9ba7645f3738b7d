"""A multirun as rows: each trial's overrides, metrics and status (from its folder and the stored study),
best first, as Markdown and CSV; and its trials as an Optuna study for history and importances. The
command is emotion_lab.tools.sweep_report; report.py builds a sweep's report from these."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
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


DEFAULT_OBJECTIVE = "val/f1_weighted_best"


def sweep_objective(trial: Path) -> str:
    config = trial / ".hydra" / "config.yaml"
    if config.is_file():
        metric = OmegaConf.load(config).get("optimized_metric")
        if metric:
            return str(metric)
    return DEFAULT_OBJECTIVE


def trial_params(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Each trial's swept hyperparameters: the overrides that differ between trials, as key -> value."""
    shared = set(shared_overrides(rows))
    return [dict(o.partition("=")[::2] for o in row["overrides"] if o not in shared and "=" in o) for row in rows]


def folder_study(
    values: Sequence[float | None], pruned: Sequence[bool] = (), params: Sequence[dict[str, str]] = ()
) -> Any:
    """A sweep's trials from their folders as an in-memory Optuna study (maximised), in launch order: a
    complete trial (`values[i]` not None) with its value and, given `params`, the swept hyperparameters that
    vary between complete trials; a pruned one (`pruned[i]`) and a failed one without."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution
    from optuna.trial import TrialState

    finished = [i for i, v in enumerate(values) if v is not None]
    done = [params[i] for i in finished] if params else []
    distributions, parsed = {}, [{} for _ in values]
    for key in sorted({k for p in done for k in p}):
        raw = [p.get(key) for p in done]
        try:
            numbers = [float(r) for r in raw]
        except (TypeError, ValueError):
            distributions[key] = CategoricalDistribution(sorted({str(r) for r in raw}))
            numbers = [str(r) for r in raw]
        else:
            if min(numbers) == max(numbers):
                continue
            distributions[key] = FloatDistribution(min(numbers), max(numbers))
        for i, value in zip(finished, numbers):
            parsed[i][key] = value
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    for i, (row, value) in enumerate(zip(parsed, values)):
        if value is not None:
            trial = optuna.trial.create_trial(params=row, distributions=distributions, value=value)
        else:
            stopped = i < len(pruned) and pruned[i]
            trial = optuna.trial.create_trial(state=TrialState.PRUNED if stopped else TrialState.FAIL)
        study.add_trial(trial)
    return study


def importance_evaluator() -> Any:
    """Optuna's random-forest impurity decrease, seeded: same trials, same report."""
    import optuna

    return optuna.importance.MeanDecreaseImpurityImportanceEvaluator(seed=0)


def importances(params: list[dict[str, str]], values: list[float | None]) -> dict[str, float]:
    """Importances of the swept hyperparameters over the finished trials (Optuna's mean decrease in impurity)."""
    return study_importances(folder_study(values, params=params))


def study_importances(study: Any) -> dict[str, float]:
    """Importances over a study's complete trials, with the distributions it sampled from; none without two
    complete trials with a hyperparameter."""
    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < 2 or not any(trial.params for trial in complete):
        return {}
    return dict(optuna.importance.get_param_importances(study, evaluator=importance_evaluator()))
