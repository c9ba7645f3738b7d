"""The Optuna study behind `hparams_search=optuna`: its storage, its search space, and each trial's
handle on it from inside the training process.

The sweeper (`hydra_plugins/emotion_lab_sweeper`) creates or resumes the study; every trial runs in
a Hydra job (in the sweeper's process, a launcher's worker or another machine) whose job number is
its trial number, and finds its trial through the storage, or through the gRPC proxy the sweep serves
it on, so pruning decisions and intermediate scores reach the one study whichever process runs it.
"""

from __future__ import annotations

import json
import os
import shlex
import sqlite3
import urllib.parse
import warnings
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
from emotion_lab.utils.atomic import write_text

# Set by the sweeper in each trial's Hydra config (hydra.sweeper.<key>): the storage the trial opens,
# the sweep's own or the address it serves the study on.
TRIAL_STORAGE_KEY = "trial_storage"
# Optuna's gRPC storage proxy, as a storage spec: grpc://host:port.
GRPC = "grpc://"
# The study's user attribute holding its search space, checked when a sweep resumes it.
SPACE_ATTR = "search_space"
# In the sweep folder: where its study is stored, so reports find it (a file inside the folder is kept relative).
STUDY_FILE = "study.yaml"
# The one database scheme whose file can lie inside a sweep folder.
SQLITE = "sqlite:///"
# A trial that was running when an earlier sweep stopped: failed, and not counted towards n_trials.
INTERRUPTED_ATTR = "interrupted"


class SweepSetupError(UserInputError):
    """A sweep that cannot start: the sweeper prints this one line and exits before any trial."""


# Query keys a database driver reads a password from (libpq and the SQLAlchemy dialects built on it).
PASSWORD_KEYS = ("password", "passwd")


def _is_password_key(pair: str) -> bool:
    return urllib.parse.unquote_plus(pair.partition("=")[0]).lower() in PASSWORD_KEYS


def passwords(spec: str) -> list[str]:
    """The passwords a storage URL carries, after `user:` or as a query key (`?password=...`), as written."""
    parts = urllib.parse.urlsplit(spec)
    found = [parts.password] if parts.password else []
    pairs = parts.query.split("&") if parts.query else []
    return found + [pair.partition("=")[2] for pair in pairs if _is_password_key(pair)]


def has_password(spec: str) -> bool:
    return bool(passwords(spec))


def without_password(spec: str) -> str:
    """A storage URL as it may be printed: a password in it, after `user:` or in the query, is masked."""
    password = urllib.parse.urlsplit(spec).password
    if password:
        spec = spec.replace(f":{password}@", ":***@", 1)
    head, question, rest = spec.partition("?")
    query, hash_, fragment = rest.partition("#")
    if not question:
        return spec
    pairs = [f"{pair.partition('=')[0]}=***" if _is_password_key(pair) else pair for pair in query.split("&")]
    return f"{head}?{'&'.join(pairs)}{hash_}{fragment}"


def redacted(text: str, spec: str) -> str:
    """`text` (a driver's error, say) with the passwords of `spec` masked, as written and decoded."""
    for password in passwords(spec):
        for form in {password, urllib.parse.unquote_plus(password)} - {""}:
            text = text.replace(form, "***")
    return text


class WorkerLost(RuntimeError):
    """The process or machine running a trial stopped before the trial ended (a launcher raises it in
    the trial's place): the trial is interrupted, not failed, and the sweep runs another."""


class StudyOutsideFolder(UserInputError):
    """study.yaml names a storage outside its sweep folder: a report leaves it alone unless the user passes it."""


def open_storage(spec: str) -> optuna.storages.BaseStorage:
    """`spec` with a scheme (`sqlite:///study.db`, `postgresql://...`): a database; `grpc://host:port`: the
    study a sweep serves; otherwise the path of a journal file, which needs no server and takes concurrent
    writers on one machine or a shared filesystem (joblib workers, submitit jobs)."""
    if spec.startswith(GRPC):
        host, _, port = spec.removeprefix(GRPC).rpartition(":")  # an IPv6 host keeps its brackets, as gRPC wants
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.GrpcStorageProxy(host=host, port=int(port))
    if "://" in spec:
        try:
            if spec.startswith("sqlite:///"):  # a file in a folder that may not exist yet (the sweep's own)
                Path(spec.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            return optuna.storages.RDBStorage(spec)
        except Exception as err:  # noqa: BLE001 - any driver error is the same message to the user
            raise SweepSetupError(
                f"hydra.sweeper.storage={without_password(spec)}: cannot open it "
                f"({type(err).__name__}: {redacted(first_line(err), spec)}); give a writable database URL or a "
                "journal file path"
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


def hydra_quoted(value: str) -> str:
    """`value` as one quoted Hydra override value that parses back to itself: quotes escaped, backslashes
    doubled only where Hydra reads them as escapes (before a quote or at the end), `${` kept literal."""
    out, run = [], 0
    for char in value:
        if char == "\\":
            run += 1
            continue
        out.append("\\" * (run * 2 if char == "'" else run))
        run = 0
        out.append("\\'" if char == "'" else char)
    out.append("\\" * run * 2)
    return "'" + "".join(out).replace("${", "\\${") + "'"


def _trial_id(study: optuna.Study, storage: optuna.storages.BaseStorage, number: int) -> int:
    """The storage's id of trial `number` (KeyError when there is none), through its public lookups."""
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study.study_name), number)


def trial_in_this_job(sweeper_config: Any, job_number: int) -> optuna.Trial | None:
    """The running trial this Hydra job trains (the sweeper numbers each job as its trial), or None when
    the study has no such running trial: scores reported to it reach the study, and its pruner decides."""
    spec = sweeper_config.get(TRIAL_STORAGE_KEY)
    if not spec:  # launched by hand or by another sweeper: no study to report to
        return None
    storage = open_storage(str(spec))
    study = optuna.load_study(
        study_name=sweeper_config.study_name, storage=storage, pruner=hydra.utils.instantiate(sweeper_config.pruner)
    )
    try:
        trial_id = _trial_id(study, storage, job_number)
    except KeyError:
        return None
    if storage.get_trial(trial_id).state != optuna.trial.TrialState.RUNNING:
        return None
    return optuna.Trial(study, trial_id)


def mark_interrupted(study: optuna.Study, storage: optuna.storages.BaseStorage, number: int) -> None:
    """Trial `number` will not finish (its sweep stopped, or its worker died): failed, and flagged so the
    sweep does not count it towards n_trials."""
    trial_id = _trial_id(study, storage, number)
    try:
        storage.set_trial_user_attr(trial_id, INTERRUPTED_ATTR, True)
    except optuna.exceptions.UpdateFinishedTrialError:  # it ended after all (its job told it)
        return
    study.tell(number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)


def is_interrupted(trial: optuna.trial.FrozenTrial) -> bool:
    # Studies made before the sweeper used only Optuna's public API flag it as a system attribute.
    return bool(trial.user_attrs.get(INTERRUPTED_ATTR) or trial.system_attrs.get(INTERRUPTED_ATTR))


def rebased(spec: str, place) -> str:
    """`spec` with its file's path (a journal file, or a sqlite URL's) passed through `place`; a database
    server's URL as it is."""
    if spec.startswith(SQLITE):
        return SQLITE + str(place(Path(spec.removeprefix(SQLITE))))
    return spec if "://" in spec else str(place(Path(spec)))


def record_study(sweep_dir: Path, study_name: str, storage: str) -> None:
    """Write study.yaml: a journal or sqlite file inside the folder relative to it, so a copied folder
    (into docs/results) still finds its study."""
    sqlite = storage.startswith(SQLITE)
    if sqlite or "://" not in storage:
        path = Path(storage.removeprefix(SQLITE)).resolve()
        inside = path.is_relative_to(sweep_dir.resolve())
        storage = str(path.relative_to(sweep_dir.resolve()) if inside else path)
        storage = SQLITE + storage if sqlite else storage
    write_text(sweep_dir / STUDY_FILE, json.dumps({"study_name": study_name, "storage": storage}, indent=2) + "\n")


class _ReadOnlyJournal(optuna.storages.journal.JournalFileBackend):
    """A journal file read where it lies: never created, never appended to (so no lock file either)."""

    def __init__(self, path: str) -> None:
        if not os.path.isfile(path):  # Optuna's backend would create it
            raise FileNotFoundError(f"no such file: {path}")
        super().__init__(path)
        self.path = path

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        raise PermissionError(f"{self.path}: opened read-only for a report")


def open_storage_read_only(spec: str) -> optuna.storages.BaseStorage:
    """A study's storage for reading only: nothing is created (no file, folder or table). A sqlite file
    opens in SQLite's read-only mode, a journal file refuses appends; any other URL (a database server)
    connects as given, so only pass one the user named."""
    if spec.startswith(SQLITE):
        path = Path(spec.removeprefix(SQLITE)).absolute()
        if not path.is_file():  # SQLite would create it (and Optuna its tables)
            raise FileNotFoundError(f"no such file: {path}")
        # Connected here, not through SQLAlchemy's URL parsing, which would decode the quoted path once too often.
        uri = f"file:{urllib.parse.quote(str(path))}?mode=ro"
        engine = {"creator": lambda: sqlite3.connect(uri, uri=True, check_same_thread=False)}
        return optuna.storages.RDBStorage("sqlite://", engine_kwargs=engine, skip_table_creation=True)
    if "://" in spec:
        return optuna.storages.RDBStorage(spec, skip_table_creation=True)
    return optuna.storages.JournalStorage(_ReadOnlyJournal(spec))


def _inside(sweep_dir: Path, spec: str) -> str:
    """`spec` as recorded in study.yaml, resolved against the sweep folder; refused unless the file is in it."""
    sqlite = spec.startswith(SQLITE)
    if "://" in spec and not sqlite:
        outside = True
    else:
        path = (sweep_dir / spec.removeprefix(SQLITE)).resolve()  # an absolute path stays itself
        outside = not path.is_relative_to(sweep_dir.resolve())
    if outside:
        raise StudyOutsideFolder(
            f"{sweep_dir / STUDY_FILE}: its study storage {without_password(spec)} lies outside the sweep folder "
            f"and was not opened; to read it, pass --storage {shlex.quote(without_password(spec))}"
        )
    return SQLITE + str(path) if sqlite else str(path)


def read_study_record(record: Path) -> dict[str, str]:
    try:
        found = json.loads(record.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserInputError(f"{record}: not a study record ({first_line(err)})") from None
    if not (isinstance(found, dict) and all(isinstance(found.get(k), str) for k in ("study_name", "storage"))):
        raise UserInputError(f"{record}: not a study record (expected study_name and storage, as text)")
    return found


def stored_study(sweep_dir: Path, storage: str | None = None) -> optuna.Study | None:
    """The study a sweep folder records (None for sweeps without one, such as Hydra's grid), opened
    read-only. From study.yaml only a file inside the folder is opened (its journal, or a sqlite file):
    anything else raises StudyOutsideFolder. `storage` (the user's --storage) is opened instead,
    wherever it is; a storage it cannot read is a UserInputError."""
    record = sweep_dir / STUDY_FILE
    found = read_study_record(record) if record.is_file() else {}
    if storage is None:
        if not found:
            return None
        spec = _inside(sweep_dir, found["storage"])
        if not Path(spec.removeprefix(SQLITE)).is_file():
            return None  # moved or deleted: the trial folders still report
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.load_study(study_name=found.get("study_name"), storage=open_storage_read_only(storage or spec))
    except KeyError:  # the storage holds no such study
        if storage is None:
            return None
        raise UserInputError(
            f"--storage {without_password(storage)}: holds no study named {found.get('study_name')!r}"
        ) from None
    except Exception as err:  # noqa: BLE001 - a driver's, SQLite's or Optuna's error: one line either way
        reason = err.__cause__ or err  # Optuna wraps a driver's error in a generic one
        raise UserInputError(
            f"{'--storage ' + without_password(storage) if storage else record}: cannot read the study "
            f"({type(reason).__name__}: {redacted(first_line(reason), storage or '')})"
        ) from None


def trial_status(trial: optuna.trial.FrozenTrial) -> str:
    """How a stored trial ended, in sweep_report's words."""
    if is_interrupted(trial):
        return "interrupted"
    return {"COMPLETE": "ok", "FAIL": "failed", "PRUNED": "pruned"}.get(trial.state.name, trial.state.name.lower())
