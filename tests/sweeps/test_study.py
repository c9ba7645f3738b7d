"""The study behind hparams_search=optuna: Hydra's sweep syntax as distributions, the search-space check,
storage errors and the stored study's record."""

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from emotion_lab.sweeps.study import (
    SweepSetupError,
    check_same_search,
    open_storage,
    record_study,
    search_space,
    space_signature,
    stored_study,
    trial_status,
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
