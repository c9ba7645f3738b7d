"""`hydra/sweeper=optuna_study`: Hydra's `-m` driven by a current Optuna study, stored and resumable.

Hydra finds this plugin by its package (`hydra_plugins.*`); its options live in
`emotion_lab/conf/hydra/sweeper/optuna_study.yaml`, the sampler and pruner in the groups beside it. Each batch of
`n_jobs` trials is asked from the study, launched through the configured launcher (trial number =
job number = the trial's folder), and told back as complete, pruned or failed. Trials that run where
the storage cannot be opened (hydra/launcher=ray) reach the study through a gRPC proxy the sweep serves.
"""

from __future__ import annotations

import logging
import math
import threading
from pathlib import Path
from typing import Any

import hydra
import optuna
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from emotion_lab.errors import UserInputError, first_line
from emotion_lab.sweeps.proxy import serve_study
from emotion_lab.sweeps.study import (
    GRPC,
    SQLITE,
    STUDY_FILE,
    TRIAL_STORAGE_KEY,
    SweepSetupError,
    WorkerLost,
    check_same_search,
    has_password,
    hydra_quoted,
    is_interrupted,
    mark_interrupted,
    open_storage,
    read_study_record,
    rebased,
    record_study,
    search_space,
    space_signature,
    without_password,
)

log = logging.getLogger(__name__)
# hydra-submitit-launcher's launchers (submitit_local, submitit_slurm) live in this module.
SUBMITIT = "hydra_plugins.hydra_submitit_launcher"

# Launchers whose trials run on this machine: a served study listens on loopback for them.
LOCAL_LAUNCHERS = ("BasicLauncher", "JoblibLauncher", "LocalLauncher")


class OptunaStudySweeper(Sweeper):
    def __init__(
        self,
        sampler: DictConfig,
        pruner: DictConfig,
        direction: str,
        study_name: str,
        storage: str | None,
        proxy: DictConfig,
        trial_storage: str | None,
        n_trials: int,
        n_jobs: int,
        max_failure_rate: float,
        params: DictConfig | None,
    ) -> None:
        # Sampler and pruner arrive as configs (`_recursive_: false`): a resumed study re-seeds its sampler.
        self.sampler_cfg, self.pruner_cfg = sampler, pruner
        self.direction, self.study_name, self.storage = direction, study_name, storage
        self.proxy = proxy
        self.n_trials, self.n_jobs, self.max_failure_rate = n_trials, max(1, n_jobs), max_failure_rate
        self.params = OmegaConf.to_container(params) if params else {}
        del trial_storage  # a trial's own setting, declared in the config so the sweep can set it without `++`

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> optuna.Study:
        sweep_dir = Path(self.config.hydra.sweep.dir)
        try:
            self.serving = self._serves_study()
            study, space, fixed = self._open_study(arguments, sweep_dir)
            served_at = None
            if self.serving:
                served_at = serve_study(self.storage_obj, self._proxy_host(), int(self.proxy.port))
            # What each trial opens: the served study, or the storage with a file's path absolute (a
            # worker may run in another folder); set in its config as one quoted override.
            trial_storage = served_at or rebased(self.storage, Path.absolute)
            self.trial_storage_override = f"hydra.sweeper.{TRIAL_STORAGE_KEY}={hydra_quoted(trial_storage)}"
        except SweepSetupError as err:
            raise SystemExit(str(err)) from None  # one line, before any trial runs
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
            mark_interrupted(study, self.storage_obj, trial.number)
        done = sum(not is_interrupted(t) for t in study.get_trials(deepcopy=False))
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        record_study(sweep_dir, self.study_name, self.storage)
        log.info(
            "study %r in %s: %d of %d trials done%s; sampler %s, pruner %s",
            self.study_name,
            without_password(self.storage),
            done,
            self.n_trials,
            ", resuming" if done else "",
            type(study.sampler).__name__,
            type(study.pruner).__name__,
        )
        failures = 0
        while done < self.n_trials:
            trials = [study.ask(space) for _ in range(min(self.n_jobs, self.n_trials - done))]
            for trial in trials:
                log.info("trial %d: %s", trial.number, " ".join(f"{k}={v}" for k, v in trial.params.items()))
            try:
                returns = self._launch(trials, fixed)
            except BaseException as err:  # Ctrl-C, SIGTERM, a lost job or a stopping error: the batch will not finish
                for trial in trials:
                    mark_interrupted(study, self.storage_obj, trial.number)
                log.warning(
                    "sweep stopped in trial %s (marked interrupted): rerun the same command with "
                    "hydra.sweep.dir=%s to resume",
                    ", ".join(str(t.number) for t in trials),
                    sweep_dir,
                )
                if isinstance(err, SystemExit) and not err.code:
                    raise SystemExit(1) from err  # Lightning exits 0 on SIGTERM; an unfinished sweep did not succeed
                raise
            told = [self._tell(study, trial, ret) for trial, ret in zip(trials, returns)]
            if all(t is None for t in told):  # no worker left that finishes a trial: asking more would loop
                raise SystemExit(
                    f"every trial of the last batch ({', '.join(str(t.number) for t in trials)}) lost its worker; "
                    f"check the cluster, then rerun the same command with hydra.sweep.dir={sweep_dir} to resume"
                )
            failures += sum(t is False for t in told)
            done += sum(t is not None for t in told)
            if done and failures / done > self.max_failure_rate:
                raise SystemExit(
                    f"{failures} of {done} trials failed, above hydra.sweeper.max_failure_rate={self.max_failure_rate}"
                )
        self._write_results(study, sweep_dir)
        return study

    def _serves_study(self) -> bool:
        """Whether trials reach the study through the sweep's gRPC proxy rather than its storage."""
        enabled = self.proxy.enabled
        if enabled not in ("auto", True, False):
            raise SweepSetupError(f"hydra.sweeper.proxy.enabled={enabled!r}: allowed values are auto, true, false")
        return bool(getattr(self.launcher, "runs_trials_elsewhere", False)) if enabled == "auto" else enabled

    def _proxy_host(self) -> str:
        if self.proxy.host:
            return str(self.proxy.host)
        if hasattr(self.launcher, "study_host"):  # the launcher knows how its workers reach this machine
            return self.launcher.study_host()
        if type(self.launcher).__name__ in LOCAL_LAUNCHERS:
            return "127.0.0.1"
        raise SweepSetupError(
            f"hydra.sweeper.proxy.host is not set: {type(self.launcher).__name__} runs trials on other machines; "
            "give this machine's address that they reach, e.g. hydra.sweeper.proxy.host=<login node address>"
        )

    def _default_storage(self, sweep_dir: Path) -> str:
        """The folder's own study when it records one (a resumed sweep), else a journal file, or a SQLite
        file when the study is served: Optuna's proxy does not support journal storage (optuna#6084)."""
        record = sweep_dir / STUDY_FILE
        if record.is_file():
            try:
                recorded = read_study_record(record)["storage"]
            except UserInputError as err:
                raise SweepSetupError(str(err)) from None
            if "://" in recorded and not recorded.startswith(SQLITE):
                raise SweepSetupError(
                    f"{record}: this sweep's study is in {without_password(recorded)}; resume it with "
                    "hydra.sweeper.storage=<that URL> (the same command as before)"
                )
            return rebased(recorded, lambda path: sweep_dir / path)
        if self.serving:
            return f"{SQLITE}{sweep_dir / 'optuna.db'}"
        return str(sweep_dir / "optuna.journal")

    def _open_study(self, arguments: list[str], sweep_dir: Path) -> tuple[optuna.Study, dict[str, Any], list[str]]:
        if self.direction not in ("maximize", "minimize"):
            raise SweepSetupError(f"hydra.sweeper.direction={self.direction!r}: allowed values are maximize, minimize")
        self.storage = str(self.storage) if self.storage else self._default_storage(sweep_dir)
        if has_password(self.storage):
            raise SweepSetupError(
                f"hydra.sweeper.storage={without_password(self.storage)}: a password in the URL would be written "
                "into the sweep's files (multirun.yaml, study.yaml, every trial's config); leave it out and let the "
                "database driver find it (PostgreSQL: ~/.pgpass or PGPASSWORD)"
            )
        if self.storage.startswith(GRPC):
            raise SweepSetupError(
                f"hydra.sweeper.storage={self.storage}: the sweep serves its own study; give the storage behind "
                "it (a file or database URL) and hydra.sweeper.proxy.enabled=true"
            )
        if self.serving and "://" not in self.storage:
            raise SweepSetupError(
                f"hydra.sweeper.storage={self.storage}: a journal file cannot be served to trials on other machines "
                "(Optuna's gRPC proxy does not support it); start a new sweep without hydra.sweeper.storage (it "
                "keeps a SQLite file) or with a database URL, or set hydra.sweeper.proxy.enabled=false where every "
                "node shares the sweep folder's filesystem"
            )
        space, fixed = search_space(self.params, arguments)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        storage = self.storage_obj = open_storage(self.storage)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
            study = optuna.create_study(
                study_name=self.study_name,
                storage=storage,
                sampler=hydra.utils.instantiate(self.sampler_cfg),
                pruner=hydra.utils.instantiate(self.pruner_cfg),
                direction=self.direction,
                load_if_exists=True,
            )
        except Exception as err:  # noqa: BLE001 - e.g. a read-only database: one line, not a traceback
            raise SweepSetupError(
                f"hydra.sweeper.storage={without_password(self.storage)}: cannot use it ({first_line(err)})"
            ) from None
        check_same_search(study, space_signature(space, self.direction, fixed), str(self.storage))
        if study.trials and self.sampler_cfg.get("seed") is not None:
            # The same seed would draw the start-up trials already run again: continue from another one.
            study.sampler = hydra.utils.instantiate(self.sampler_cfg, seed=self.sampler_cfg.seed + len(study.trials))
        return study, space, fixed

    def _launch(self, trials: list[optuna.Trial], fixed: list[str]) -> list[Any]:
        """Each trial as a Hydra job numbered like the trial, so `<sweep>/<number>/` is its folder."""
        batches = [trials]
        if [t.number for t in trials] != list(range(trials[0].number, trials[0].number + len(trials))):
            batches = [[t] for t in trials]  # another process asked trials in between: launch one by one
        returns = []
        for batch in batches:
            overrides = [
                [*fixed, *(f"{k}={v}" for k, v in t.params.items()), self.trial_storage_override] for t in batch
            ]
            self.validate_batch_is_legal(overrides)
            if type(self.launcher).__module__.startswith(SUBMITIT):
                returns += self._launch_each(overrides, batch)
            else:
                returns += self.launcher.launch(overrides, initial_job_idx=batch[0].number)
        return returns

    def _launch_each(self, overrides: list[list[str]], batch: list[optuna.Trial]) -> list[JobReturn]:
        """Each trial as a job of its own, all at once: submitit collects a batch's results in one call that
        raises when any job ended without one (its node died, its time ran out), which would lose the
        results of the others. Such a job is the end of its trial alone (interrupted)."""
        returns: list[JobReturn | BaseException | None] = [None] * len(batch)

        def launch_one(i: int) -> None:
            try:
                returns[i] = self.launcher.launch([overrides[i]], initial_job_idx=batch[i].number)[0]
            except Exception as err:  # noqa: BLE001 - submitit's UncompletedJobError and FailedJobError alike
                returns[i] = WorkerLost(f"job {batch[i].number}: ended without a result ({first_line(err)})")
            except BaseException as err:  # noqa: BLE001 - handed to the sweep's thread, which stops
                returns[i] = err

        # Daemon threads: a sweep stopped with Ctrl-C exits without waiting for its jobs' results.
        threads = [threading.Thread(target=launch_one, args=(i,), daemon=True) for i in range(len(batch))]
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(timeout=1.0)
        jobs = []
        for i, ret in enumerate(returns):
            if isinstance(ret, WorkerLost):
                lost = JobReturn(overrides=overrides[i], status=JobStatus.FAILED)
                lost.return_value = ret
                ret = lost
            elif isinstance(ret, BaseException):
                raise ret
            jobs.append(ret)
        return jobs

    def _tell(self, study: optuna.Study, trial: optuna.Trial, ret: JobReturn) -> bool | None:
        """Record how the trial ended: True when it counts, False when it failed, None when its worker
        stopped under it (interrupted: not counted, the sweep runs another)."""
        if ret.status == JobStatus.FAILED:
            # The job's exception, read as the dataclass field (Hydra's `return_value` prints and re-raises it).
            error = ret._return_value
            if isinstance(error, optuna.TrialPruned):
                log.info("trial %d %s", trial.number, error)
                study.tell(trial, state=TrialState.PRUNED, skip_if_finished=True)
                return True
            if isinstance(error, WorkerLost):
                log.warning("trial %d interrupted: %s", trial.number, error)
                mark_interrupted(study, self.storage_obj, trial.number)
                return None
            log.warning("trial %d failed: %s: %s", trial.number, type(error).__name__, error, exc_info=error)
            study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            return False
        value = ret.return_value
        if value is None or not math.isfinite(float(value)):
            log.warning("trial %d returned %r (failed or diverged): recorded as failed", trial.number, value)
            study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            return False
        study.tell(trial, float(value), skip_if_finished=True)
        return True

    def _write_results(self, study: optuna.Study, sweep_dir: Path) -> None:
        counts = {state.name.lower(): len(study.get_trials(deepcopy=False, states=(state,))) for state in TrialState}
        results: dict[str, Any] = {"study_name": self.study_name, "storage": str(self.storage), "trials": counts}
        if counts["complete"]:
            best = study.best_trial
            results.update(best_trial=best.number, best_value=best.value, best_params=best.params)
            log.info("best trial %d: %.4f with %s", best.number, best.value, best.params)
        OmegaConf.save(OmegaConf.create(results), sweep_dir / "optimization_results.yaml")
