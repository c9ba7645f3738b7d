"""The Optuna study behind `hparams_search=optuna`: its storage, its search space, and each trial's
handle on it from inside the training process.

The sweeper (`hydra_plugins/emotion_lab_sweeper`) creates or resumes the study; every trial runs in
a Hydra job (in the sweeper's process or a launcher's worker) and finds its own trial through the
storage, so pruning decisions and intermediate scores go through the same file whichever process
runs it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import hydra
import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    distribution_to_json,
)

from emotion_lab.errors import UserInputError, first_line

# Set by the sweeper in each trial's job (hydra.job.env_set): the number of the trial it runs.
TRIAL_ENV = "EMOTION_LAB_OPTUNA_TRIAL"
# The study's user attribute holding its search space, checked when a sweep resumes it.
SPACE_ATTR = "search_space"
# In the sweep folder: where its study is stored, so reports find it (a path inside the folder is kept relative).
STUDY_FILE = "study.yaml"
# A trial that was running when an earlier sweep stopped: failed, and not counted towards n_trials.
INTERRUPTED_ATTR = "interrupted"


class SweepSetupError(UserInputError):
    """A sweep that cannot start: the sweeper prints this one line and exits before any trial."""


def open_storage(spec: str) -> optuna.storages.BaseStorage:
    """`spec` with a scheme (`sqlite:///study.db`, `postgresql://...`): a database; otherwise the path of
    a journal file, which needs no server and takes concurrent writers (joblib workers, submitit jobs)."""
    if "://" in spec:
        try:
            if spec.startswith("sqlite:///"):  # a file in a folder that may not exist yet (the sweep's own)
                Path(spec.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            return optuna.storages.RDBStorage(spec)
        except Exception as err:  # noqa: BLE001 - any driver error is the same message to the user
            raise SweepSetupError(
                f"hydra.sweeper.storage={spec}: cannot open it ({type(err).__name__}: {first_line(err)}); "
                "give a writable database URL or a journal file path"
            ) from None
    path = Path(spec)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a"):
            pass
    except OSError as err:
        raise SweepSetupError(
            f"hydra.sweeper.storage={spec}: cannot write there ({err.strerror}); point it at a writable file, "
            "e.g. hydra.sweeper.storage=<folder>/optuna.journal"
        ) from None
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))


def distribution(override: Override) -> BaseDistribution:
    """Hydra's sweep syntax as an Optuna distribution: `choice(a, b)` (or `a,b`), `range(lo, hi[, step])`
    (hi excluded), `interval(lo, hi)`, with `tag(log, ...)` for a log scale and `tag(int, ...)` for integers."""
    value = override.value()
    if isinstance(value, ChoiceSweep):
        return CategoricalDistribution(list(value.list))
    if isinstance(value, RangeSweep):
        if all(isinstance(x, int) for x in (value.start, value.stop, value.step)):
            return IntDistribution(value.start, value.stop - value.step, step=value.step)
        return CategoricalDistribution(list(override.sweep_iterator()))  # Hydra's own float steps, exactly
    if isinstance(value, IntervalSweep):
        log = "log" in value.tags
        if "int" in value.tags:
            return IntDistribution(int(value.start), int(value.end), log=log)
        return FloatDistribution(value.start, value.end, log=log)
    raise SweepSetupError(f"{override.input_line}: not a sweep (use choice(...), range(...) or interval(...))")


def search_space(params: Mapping[str, Any], arguments: list[str]) -> tuple[dict[str, BaseDistribution], list[str]]:
    """The distributions to sample and the overrides every trial shares.

    `params` is the config's search space (`hydra.sweeper.params`); a sweep on the command line
    (`model.net.dropout=interval(0,0.3)`) replaces it for its key, any other argument is passed to
    every trial as given.
    """
    parser = OverridesParser.create()
    space: dict[str, BaseDistribution] = {}
    fixed: list[str] = []
    lines = [f"{key}={value}" for key, value in (params or {}).items()] + list(arguments)
    for override in parser.parse_overrides(lines):
        key = override.get_key_element()
        space.pop(key, None)
        fixed = [line for line in fixed if parser.parse_override(line).get_key_element() != key]
        if override.is_sweep_override():
            space[key] = distribution(override)
        else:
            fixed.append(override.input_line)
    return space, fixed


def space_signature(space: Mapping[str, BaseDistribution], direction: str, fixed: list[str]) -> str:
    """What makes two sweeps the same study: the distributions, the direction and the overrides every
    trial shares (another experiment or epoch budget makes trials incomparable), as stable text."""
    described = {key: json.loads(distribution_to_json(dist)) for key, dist in sorted(space.items())}
    return json.dumps({"direction": direction, "params": described, "fixed": sorted(fixed)}, sort_keys=True)


def check_same_search(study: optuna.Study, signature: str, storage: str) -> None:
    """A resumed study must be the search this sweep describes, or its trials would mislead TPE."""
    recorded = study.user_attrs.get(SPACE_ATTR)
    if recorded is None and not study.trials:
        study.set_user_attr(SPACE_ATTR, signature)
        return
    if recorded != signature:
        theirs, ours = json.loads(recorded) if recorded else {}, json.loads(signature)
        old, new = theirs.get("params", {}), ours["params"]
        differing = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        differing += sorted(set(theirs.get("fixed", [])) ^ set(ours["fixed"]))
        differing += ["direction"] if theirs.get("direction") != ours["direction"] else []
        raise SweepSetupError(
            f"hydra.sweeper.storage={storage} already holds study {study.study_name!r} over another search space "
            f"(differs in: {', '.join(differing)}); start a new one with hydra.sweeper.study_name=<new name> "
            "or a new hydra.sweep.dir"
        )


def trial_in_this_job(pruner_config: Any, study_name: str, storage: str) -> optuna.Trial | None:
    """The running trial this process trains, when the sweeper launched it (else None): scores
    reported to it reach the study's storage, and its pruner decides on them."""
    number = os.environ.get(TRIAL_ENV)
    if number is None:
        return None
    study = optuna.load_study(
        study_name=study_name, storage=open_storage(storage), pruner=hydra.utils.instantiate(pruner_config)
    )
    trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, int(number))
    return optuna.Trial(study, trial_id)


def record_study(sweep_dir: Path, study_name: str, storage: str) -> None:
    if "://" not in storage:
        path = Path(storage).resolve()
        storage = str(path.relative_to(sweep_dir.resolve()) if path.is_relative_to(sweep_dir.resolve()) else path)
    (sweep_dir / STUDY_FILE).write_text(json.dumps({"study_name": study_name, "storage": storage}, indent=2) + "\n")


def stored_study(sweep_dir: Path) -> optuna.Study | None:
    """The study a sweep folder records (None for sweeps without one, such as Hydra's grid)."""
    record = sweep_dir / STUDY_FILE
    if not record.is_file():
        return None
    found = json.loads(record.read_text())
    storage = found["storage"] if "://" in found["storage"] else str(sweep_dir / found["storage"])
    if "://" not in storage and not Path(storage).is_file():
        return None  # moved or deleted: the trial folders still report
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.load_study(study_name=found["study_name"], storage=open_storage(storage))
    except KeyError:  # the storage holds no such study
        return None


def trial_status(trial: optuna.trial.FrozenTrial) -> str:
    """How a stored trial ended, in sweep_report's words."""
    if trial.system_attrs.get(INTERRUPTED_ATTR):
        return "interrupted"
    return {"COMPLETE": "ok", "FAIL": "failed", "PRUNED": "pruned"}.get(trial.state.name, trial.state.name.lower())
