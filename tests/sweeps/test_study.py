"""The study behind hparams_search=optuna: Hydra's sweep syntax as distributions, the search-space check,
storage errors and the stored study's record, read by reports in place and read-only."""

import json
import shlex
import socket
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from emotion_lab.errors import UserInputError
from emotion_lab.sweeps.study import (
    StudyOutsideFolder,
    SweepSetupError,
    check_same_search,
    has_password,
    open_storage,
    record_study,
    search_space,
    space_signature,
    stored_study,
    trial_status,
    without_password,
)

PARAMS = {
    "model.net.lstm_hidden": "choice(64, 128)",
    "model.net.dropout": "interval(0.0, 0.5)",
    "model.optimizer.lr": "tag(log, interval(1e-4, 3e-3))",
    "trainer.max_epochs": "range(1, 7, 2)",
    "data.batch_size": "tag(int, interval(16, 64))",
    "model.net.dropout_float_range": "range(0.0, 0.3, 0.1)",
}


def test_hydra_sweep_syntax_becomes_optuna_distributions():
    space, fixed = search_space(PARAMS, [])
    assert space == {
        "model.net.lstm_hidden": CategoricalDistribution([64, 128]),
        "model.net.dropout": FloatDistribution(0.0, 0.5),
        "model.optimizer.lr": FloatDistribution(1e-4, 3e-3, log=True),
        "trainer.max_epochs": IntDistribution(1, 5, step=2),  # range excludes its stop, as Python's does
        "model.net.dropout_float_range": CategoricalDistribution([0.0, 0.1, 0.2]),  # Hydra's own float steps
        "data.batch_size": IntDistribution(16, 64),
    }
    assert fixed == []


def test_the_command_line_replaces_a_swept_key_and_fixes_the_rest():
    args = ["experiment=cached_head", "model.net.dropout=0.1", "model.net.attn_heads=2,4", "trainer.max_epochs=3"]
    space, fixed = search_space(PARAMS, args)
    assert "model.net.dropout" not in space and "trainer.max_epochs" not in space
    assert space["model.net.attn_heads"] == CategoricalDistribution([2, 4])
    assert fixed == ["experiment=cached_head", "model.net.dropout=0.1", "trainer.max_epochs=3"]


def test_a_study_resumes_only_over_the_same_search(tmp_path):
    storage = str(tmp_path / "optuna.journal")
    study = optuna.create_study(study_name="s", storage=open_storage(storage), direction="maximize")
    space, _ = search_space(PARAMS, [])
    fixed = ["experiment=cached_head"]
    check_same_search(study, space_signature(space, "maximize", fixed), storage)  # a new study takes this search
    study.ask(space)
    check_same_search(study, space_signature(space, "maximize", fixed), storage)
    narrower = {**space, "model.net.dropout": FloatDistribution(0.0, 0.3)}
    with pytest.raises(SweepSetupError, match=r"over another search space \(differs in: model.net.dropout\)"):
        check_same_search(study, space_signature(narrower, "maximize", fixed), storage)
    with pytest.raises(SweepSetupError, match=r"differs in: direction"):
        check_same_search(study, space_signature(space, "minimize", fixed), storage)
    longer = [*fixed, "trainer.max_epochs=3"]
    with pytest.raises(SweepSetupError, match=r"differs in: trainer.max_epochs=3\)"):
        check_same_search(study, space_signature(space, "maximize", longer), storage)


def test_a_database_opens_in_a_new_folder_and_one_that_cannot_be_opened_is_one_line(tmp_path):
    open_storage(f"sqlite:///{tmp_path}/new/folder/study.db")  # e.g. in the sweep's folder, not made yet
    assert (tmp_path / "new" / "folder" / "study.db").is_file()
    (tmp_path / "file").write_text("")
    with pytest.raises(SweepSetupError, match=r"^hydra.sweeper.storage=sqlite:///.*: cannot open it \("):
        open_storage(f"sqlite:///{tmp_path}/file/study.db")


def test_the_sweep_folder_records_its_study_relative_to_itself(tmp_path):
    sweep = tmp_path / "sweep"
    storage = sweep / "optuna.journal"
    study = optuna.create_study(study_name="head", storage=open_storage(str(storage)))
    trial = study.ask({"x": FloatDistribution(0, 1)})
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    record_study(sweep, "head", str(storage))
    moved = tmp_path / "moved"
    sweep.rename(moved)  # a sweep folder copied elsewhere (into docs/results) still finds its study
    (found,) = stored_study(moved).trials
    assert trial_status(found) == "pruned"
    assert stored_study(tmp_path) is None


def finished_study(storage: optuna.storages.BaseStorage) -> None:
    """A study named "head" with one pruned trial."""
    study = optuna.create_study(study_name="head", storage=storage)
    trial = study.ask({"x": FloatDistribution(0, 1)})
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under `folder` with its bytes and modification time."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*")}


@pytest.fixture
def no_connection(monkeypatch):
    """Refuses every database engine, Optuna database storage and socket connection, and fails the test
    at teardown if one was attempted (even where the code under test caught the refusal)."""
    attempts: list[str] = []

    def refuse(what):
        def refused(*args, **kwargs):
            attempts.append(what)
            raise ConnectionRefusedError(f"{what} attempted in a test")

        return refused

    monkeypatch.setattr(optuna.storages.RDBStorage, "__init__", refuse("RDBStorage"))
    monkeypatch.setattr(sqlalchemy, "create_engine", refuse("create_engine"))
    monkeypatch.setattr(sqlalchemy.engine, "create_engine", refuse("create_engine"))
    monkeypatch.setattr(socket.socket, "connect", refuse("socket.connect"))
    yield
    assert attempts == [], f"attempted: {attempts}"


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_a_report_reads_the_study_inside_its_folder_and_changes_nothing(tmp_path, kind):
    sweep = tmp_path / "sweep"
    spec = str(sweep / "optuna.journal") if kind == "journal" else f"sqlite:///{sweep}/study.db"
    finished_study(open_storage(spec))
    record_study(sweep, "head", spec)
    moved = tmp_path / "moved"
    sweep.rename(moved)  # recorded relative to the folder, a sqlite file too: a copied folder still finds it
    before = snapshot(moved)
    study = stored_study(moved)
    (trial,) = study.trials
    assert trial_status(trial) == "pruned"
    with pytest.raises((PermissionError, optuna.exceptions.StorageInternalError)):  # a report cannot add a trial
        study.ask()
    assert snapshot(moved) == before  # no lock file, no journal line, no table, no byte changed


@pytest.mark.parametrize(
    "storage",
    ["sqlite:///{elsewhere}/new/study.db", "{elsewhere}/new/optuna.journal", "postgresql://u:p@db.invalid:5432/s"],
    ids=["sqlite", "journal", "postgresql"],
)
@pytest.mark.usefixtures("no_connection")
def test_a_study_yaml_naming_storage_outside_its_folder_is_not_opened(tmp_path, storage):
    elsewhere = tmp_path / "elsewhere"
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    storage = storage.format(elsewhere=elsewhere)
    (sweep / "study.yaml").write_text(json.dumps({"study_name": "head", "storage": storage}))
    with pytest.raises(StudyOutsideFolder) as refused:
        stored_study(sweep)
    shown = storage.replace("u:p@", "u:***@")  # a password is never printed
    assert str(refused.value) == (
        f"{sweep}/study.yaml: its study storage {shown} lies outside the sweep folder and was not opened; "
        f"to read it, pass --storage {shlex.quote(shown)}"
    )
    assert not elsewhere.exists()
    assert sorted(p.name for p in sweep.iterdir()) == ["study.yaml"]


def test_a_link_out_of_the_folder_is_outside_it(tmp_path):
    sweep, elsewhere = tmp_path / "sweep", tmp_path / "elsewhere"
    elsewhere.mkdir()
    finished_study(open_storage(str(elsewhere / "optuna.journal")))
    sweep.mkdir()
    (sweep / "optuna.journal").symlink_to(elsewhere / "optuna.journal")
    (sweep / "study.yaml").write_text(json.dumps({"study_name": "head", "storage": "optuna.journal"}))
    with pytest.raises(StudyOutsideFolder):
        stored_study(sweep)


def test_a_storage_the_user_names_is_read_in_place_and_a_missing_one_is_one_line(tmp_path):
    elsewhere, sweep = tmp_path / "elsewhere", tmp_path / "sweep"
    url = f"sqlite:///{elsewhere}/study.db"
    finished_study(open_storage(url))
    sweep.mkdir()
    (sweep / "study.yaml").write_text(json.dumps({"study_name": "head", "storage": url}))
    before = snapshot(elsewhere)
    assert [t.state for t in stored_study(sweep, url).trials] == [optuna.trial.TrialState.PRUNED]
    assert snapshot(elsewhere) == before
    for missing in (f"sqlite:///{tmp_path}/nope/study.db", f"{tmp_path}/nope/optuna.journal"):
        with pytest.raises(UserInputError, match=rf"^--storage {missing}: cannot read the study \(FileNotFoundError"):
            stored_study(sweep, missing)
    assert not (tmp_path / "nope").exists()


def test_a_trial_flagged_interrupted_by_an_earlier_sweeper_still_reads_as_interrupted(tmp_path):
    from emotion_lab.sweeps.study import trial_status

    storage = open_storage(str(tmp_path / "optuna.journal"))
    study = optuna.create_study(study_name="s", storage=storage)
    old, new = study.ask(), study.ask()
    # Sweeps before 2026-12-03 flagged it as a system attribute; the sweeper now sets a user attribute.
    storage.set_trial_system_attr(storage.get_trial_id_from_study_id_trial_number(0, old.number), "interrupted", True)
    new.set_user_attr("interrupted", True)
    for trial in (old, new):
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
    assert [trial_status(t) for t in study.trials] == ["interrupted", "interrupted"]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:se%40cret@db.invalid/s", "postgresql://u:***@db.invalid/s"),
        ("postgresql://u@db.invalid/s?sslmode=require&password=se%40cret#x",
         "postgresql://u@db.invalid/s?sslmode=require&password=***#x"),
        ("sqlite:////studies/a.db?pass%77ord=secret", "sqlite:////studies/a.db?pass%77ord=***"),
        ("sqlite:////studies/a.db?passwords=1", "sqlite:////studies/a.db?passwords=1"),
    ],
    ids=["after-user", "query", "encoded-key", "not-a-password"],
)  # fmt: skip
def test_a_storage_url_is_printed_without_its_password(url, shown):
    assert without_password(url) == shown
    assert has_password(url) == (url != shown)


def test_a_database_given_to_a_report_is_named_without_its_password_when_it_cannot_be_read(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_text("not a database")
    with pytest.raises(UserInputError) as refused:
        stored_study(tmp_path, f"sqlite:///{junk}?password=secret")
    assert str(refused.value).startswith(f"--storage sqlite:///{junk}?password=***: cannot read the study (")
    assert "secret" not in str(refused.value)  # nor in the driver's own words
