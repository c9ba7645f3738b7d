"""The sweeper's bookkeeping with a stand-in launcher: how trials are told to the study."""

from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf
from optuna.trial import TrialState

from emotion_lab.sweeps.study import WorkerLost, stored_study
from hydra_plugins.emotion_lab_sweeper.optuna_sweeper import OptunaStudySweeper
from tests.sweeps.test_study import no_connection  # noqa: F401 - a fixture


def sweeper(tmp_path: Path, launch, n_trials: int = 3, n_jobs: int = 1, launcher=None) -> OptunaStudySweeper:
    made = OptunaStudySweeper(
        sampler=OmegaConf.create({"_target_": "optuna.samplers.RandomSampler", "seed": 0}),
        pruner=OmegaConf.create({"_target_": "optuna.pruners.NopPruner"}),
        direction="maximize",
        study_name="head",
        storage=str(tmp_path / "optuna.journal"),
        proxy=OmegaConf.create({"enabled": False, "host": None, "port": 0}),
        trial_storage=None,
        n_trials=n_trials,
        n_jobs=n_jobs,
        max_failure_rate=1.0,
        params=OmegaConf.create({"model.net.dropout": "interval(0.0, 0.5)"}),
    )
    made.config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    made.launcher = launcher or SimpleNamespace(launch=launch)
    made.validate_batch_is_legal = lambda batch: None  # needs Hydra's config loader; the launcher is a stand-in
    return made


def job(status: JobStatus, value) -> JobReturn:
    ret = JobReturn(status=status)
    ret._return_value = value
    return ret


def test_trials_are_told_as_complete_pruned_or_failed(tmp_path):
    outcomes = iter(
        [
            job(JobStatus.COMPLETED, 0.9),
            job(JobStatus.FAILED, optuna.TrialPruned("pruned after epoch 0")),
            job(JobStatus.COMPLETED, None),  # a trial whose run failed or diverged
        ]
    )
    launched = []

    def launch(batch, initial_job_idx):
        launched.append(initial_job_idx)
        return [next(outcomes) for _ in batch]

    sweeper(tmp_path, launch).sweep(["experiment=cached_head"])
    trials = stored_study(tmp_path).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL]
    assert launched == [0, 1, 2]  # job number = trial number = the trial's folder
    assert OmegaConf.load(tmp_path / "optimization_results.yaml").best_value == pytest.approx(0.9)


def test_a_stopped_sweep_marks_its_trial_interrupted_and_exits_non_zero(tmp_path):
    def sigterm(batch, initial_job_idx):
        raise SystemExit(0)  # what Lightning raises on SIGTERM

    with pytest.raises(SystemExit) as stopped:
        sweeper(tmp_path, sigterm).sweep([])
    assert stopped.value.code == 1
    (trial,) = stored_study(tmp_path).trials
    assert trial.state == TrialState.FAIL and trial.user_attrs["interrupted"] is True


def test_a_trial_whose_worker_died_is_interrupted_and_the_sweep_runs_another(tmp_path):
    outcomes = iter(
        [
            job(JobStatus.COMPLETED, 0.8),
            job(JobStatus.FAILED, WorkerLost("job 1: its Ray worker stopped (NodeDiedError)")),
            job(JobStatus.COMPLETED, 0.7),
        ]
    )
    launch = lambda batch, initial_job_idx: [next(outcomes) for _ in batch]  # noqa: E731
    sweeper(tmp_path, launch, n_trials=2, n_jobs=2).sweep([])
    trials = stored_study(tmp_path).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert trials[1].user_attrs["interrupted"] is True and "interrupted" not in trials[2].user_attrs
    assert OmegaConf.load(tmp_path / "optimization_results.yaml").trials.complete == 2


def test_a_submitit_job_lost_mid_batch_ends_only_its_own_trial(tmp_path):
    class UncompletedJobError(RuntimeError):  # what submitit raises for a job killed or out of time
        pass

    class LocalLauncher:  # submitit's launcher, as the sweeper recognises it: one call per job
        __module__ = "hydra_plugins.hydra_submitit_launcher.submitit_launcher"

        def __init__(self) -> None:
            self.calls = []

        def launch(self, batch, initial_job_idx):
            self.calls.append((len(batch), initial_job_idx))
            if initial_job_idx == 1:
                raise UncompletedJobError("Job 4242 (task: 0) with path .submitit/4242 has not produced any output")
            return [job(JobStatus.COMPLETED, 0.5 + initial_job_idx / 10)]

    launcher = LocalLauncher()
    sweeper(tmp_path, launch=None, n_trials=2, n_jobs=2, launcher=launcher).sweep([])
    trials = stored_study(tmp_path).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert trials[0].value == pytest.approx(0.5)  # the other job's result is kept
    assert trials[1].user_attrs["interrupted"] is True
    assert sorted(launcher.calls) == [(1, 0), (1, 1), (1, 2)]  # each trial a job of its own


def test_a_batch_whose_every_worker_died_stops_the_sweep_with_how_to_resume(tmp_path):
    lost = job(JobStatus.FAILED, WorkerLost("job 0: its Ray worker stopped (NodeDiedError)"))
    with pytest.raises(SystemExit) as stopped:
        sweeper(tmp_path, lambda batch, initial_job_idx: [lost for _ in batch]).sweep([])
    assert str(stopped.value) == (
        f"every trial of the last batch (0) lost its worker; check the cluster, then rerun the same command "
        f"with hydra.sweep.dir={tmp_path} to resume"
    )
    (trial,) = stored_study(tmp_path).trials  # one lost trial, not an endless series of them
    assert trial.user_attrs["interrupted"] is True


def test_a_resumed_sweep_whose_study_is_in_a_database_asks_for_its_url(tmp_path):
    (tmp_path / "study.yaml").write_text('{"study_name": "head", "storage": "postgresql://u:secret@db/s"}\n')
    made = sweeper(tmp_path, launch=None)
    made.storage = None
    with pytest.raises(SystemExit) as stopped:
        made.sweep([])
    assert str(stopped.value) == (
        f"{tmp_path / 'study.yaml'}: this sweep's study is in postgresql://u:***@db/s; resume it with "
        "hydra.sweeper.storage=<that URL> (the same command as before)"
    )


def test_a_served_study_for_trials_elsewhere_needs_the_address_they_reach(tmp_path):
    class SlurmLauncher:  # a launcher whose trials run on other machines, without a study_host of its own
        def launch(self, batch, initial_job_idx):
            raise AssertionError("no trial may start")

    made = sweeper(tmp_path, launch=None, launcher=SlurmLauncher())
    made.proxy = OmegaConf.create({"enabled": True, "host": None, "port": 0})
    made.storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    with pytest.raises(SystemExit, match=r"^hydra.sweeper.proxy.host is not set: SlurmLauncher runs trials on"):
        made.sweep([])


def test_the_sweeper_and_the_trial_lookup_use_only_optunas_public_api():
    # Private attributes of Optuna's objects (study._storage, trial._trial_id, ...) change without notice.
    import ast

    # Underscore names that are public API: Hydra's JobReturn field and config key, namedtuple's method.
    allowed = {"_return_value", "_target_", "_replace"}
    root = Path(__file__).resolve().parents[2]
    # The sweeper's plugins and every module that touches Optuna, read as files (Hydra's plugin scan loads
    # hydra_plugins modules without setting them on their package).
    touching = [path for path in (root / "emotion_lab").rglob("*.py") if "optuna" in path.read_text(encoding="utf-8")]
    sources = [*touching, *(root / "hydra_plugins").rglob("*.py")]
    assert {"optuna_sweeper.py", "pruning.py", "study.py", "proxy.py", "ray_launcher.py"} <= {p.name for p in sources}
    private = []
    for path in sources:
        where = path.relative_to(root)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            # `x._name`, except on the module's own objects (self, cls); `getattr(x, "_name")` too.
            if isinstance(node, ast.Attribute):
                owner_is_own = isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
                attr = None if owner_is_own else node.attr
            elif isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("getattr", "setattr", "hasattr"):
                attr = node.args[1].value if len(node.args) > 1 and isinstance(node.args[1], ast.Constant) else None
            else:
                attr = None
            if isinstance(attr, str) and attr.startswith("_") and not attr.startswith("__") and attr not in allowed:
                private.append(f"{where}:{node.lineno} .{attr}")
            # `from optuna._x import y` and `import optuna._x`
            modules = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            modules += [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            private += [f"{where}:{node.lineno} import {m}" for m in modules if "optuna" in m and "._" in f".{m}"]
    assert private == []


def test_the_default_pruner_judges_half_an_epoch_in_and_at_the_first_epochs_end():
    """The default search's pruner, as the sweep builds it, over the steps its trials report (4 an epoch):
    a weak trial stops at its second report, one weak only later stops at the first epoch's end, and a
    trial past that rung is never stopped again before its last step (which is never judged)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.utils import instantiate

    from tests.conftest import CONFIG_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", ["hparams_search=optuna", "experiment=cached_head"], return_hydra_config=True)
    GlobalHydra.instance().clear()
    steps = cfg.callbacks.optuna_pruning.reports_per_epoch * cfg.trainer.max_epochs
    assert steps == 8
    study = optuna.create_study(direction="maximize", pruner=instantiate(cfg.hydra.sweeper.pruner))

    def stopped_at(scores: list[float]) -> int | None:  # as OptunaPruning reports and asks
        trial = study.ask()
        for step, score in enumerate(scores[: steps - 1]):  # the callback never reports the last step
            trial.report(score, step)
            if trial.should_prune():
                study.tell(trial, state=TrialState.PRUNED)
                return step
        study.tell(trial, scores[-1])
        return None

    assert [stopped_at([0.9] * steps) for _ in range(6)] == [None] * 6
    assert stopped_at([0.1] * steps) == 1  # half an epoch in
    assert stopped_at([0.1, 0.95, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]) == 3  # the first epoch's end
    assert stopped_at([0.1, 0.95, 0.1, 0.95, 0.1, 0.1, 0.1, 0.1]) is None  # no rung after it


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql+psycopg://u:secret@db.invalid/s", "postgresql+psycopg://u:***@db.invalid/s"),
        ("postgresql+psycopg://u@db.invalid/s?sslmode=require&password=secret",
         "postgresql+psycopg://u@db.invalid/s?sslmode=require&password=***"),
        ("mysql+pymysql://u@db.invalid/s?PASSWD=secret", "mysql+pymysql://u@db.invalid/s?PASSWD=***"),
    ],
    ids=["after-user", "query", "query-passwd"],
)  # fmt: skip
@pytest.mark.usefixtures("no_connection")
def test_a_storage_url_with_a_password_is_refused_before_anything_is_written(tmp_path, url, shown):
    made = sweeper(tmp_path / "sweep", launch=None)
    made.storage = url
    with pytest.raises(SystemExit) as stopped:
        made.sweep([])
    assert str(stopped.value).startswith(f"hydra.sweeper.storage={shown}: a password")
    assert "secret" not in str(stopped.value) and not (tmp_path / "sweep").exists()
