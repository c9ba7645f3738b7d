"""`hydra/sweeper=optuna_study`: Hydra's `-m` driven by a current Optuna study, stored and resumable.

Hydra finds this plugin by its package (`hydra_plugins.*`); its options live in
`emotion_lab/conf/hydra/sweeper/optuna_study.yaml`, the sampler and pruner in the groups beside it. Each batch of
`n_jobs` trials is asked from the study, launched through the configured launcher (trial number =
job number = the trial's folder), and told back as complete, pruned or failed.
"""

from __future__ import annotations

import logging
import math
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

from emotion_lab.errors import first_line
from emotion_lab.sweeps.study import (
    INTERRUPTED_ATTR,
    TRIAL_ENV,
    SweepSetupError,
    check_same_search,
    open_storage,
    record_study,
    search_space,
    space_signature,
)

log = logging.getLogger(__name__)


class OptunaStudySweeper(Sweeper):
    def __init__(
        self,
        sampler: DictConfig,
        pruner: DictConfig,
        direction: str,
        study_name: str,
        storage: str | None,
        n_trials: int,
        n_jobs: int,
        max_failure_rate: float,
        params: DictConfig | None,
    ) -> None:
        # Sampler and pruner arrive as configs (`_recursive_: false`): a resumed study re-seeds its sampler.
        self.sampler_cfg, self.pruner_cfg = sampler, pruner
        self.direction, self.study_name, self.storage = direction, study_name, storage
        self.n_trials, self.n_jobs, self.max_failure_rate = n_trials, max(1, n_jobs), max_failure_rate
        self.params = OmegaConf.to_container(params) if params else {}

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> optuna.Study:
        try:
            study, space, fixed = self._open_study(arguments)
        except SweepSetupError as err:
            raise SystemExit(str(err)) from None  # one line, before any trial runs
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
            self._mark_interrupted(study, trial._trial_id)
        done = sum(not t.system_attrs.get(INTERRUPTED_ATTR) for t in study.get_trials(deepcopy=False))
        sweep_dir = Path(self.config.hydra.sweep.dir)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        record_study(sweep_dir, self.study_name, self.storage)
        log.info(
            "study %r in %s: %d of %d trials done%s; sampler %s, pruner %s",
            self.study_name,
            self.storage,
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
            except BaseException as err:  # Ctrl-C, SIGTERM or a stopping error: the batch will not finish
                for trial in trials:
                    self._mark_interrupted(study, trial._trial_id)
                signal = isinstance(err, KeyboardInterrupt) or (isinstance(err, SystemExit) and not err.code)
                if signal:  # not an error the next run would meet again
                    log.warning(
                        "sweep stopped in trial %s (marked interrupted): rerun the same command with "
                        "hydra.sweep.dir=%s to resume",
                        ", ".join(str(t.number) for t in trials),
                        sweep_dir,
                    )
                if isinstance(err, SystemExit) and not err.code:
                    raise SystemExit(1) from err  # Lightning exits 0 on SIGTERM; an unfinished sweep did not succeed
                raise
            for trial, ret in zip(trials, returns):
                failures += not self._tell(study, trial, ret)
            done += len(trials)
            if failures / done > self.max_failure_rate:
                raise SystemExit(
                    f"{failures} of {done} trials failed, above hydra.sweeper.max_failure_rate={self.max_failure_rate}"
                )
        self._write_results(study, sweep_dir)
        return study

    def _open_study(self, arguments: list[str]) -> tuple[optuna.Study, dict[str, Any], list[str]]:
        if self.direction not in ("maximize", "minimize"):
            raise SweepSetupError(f"hydra.sweeper.direction={self.direction!r}: allowed values are maximize, minimize")
        if not self.storage:
            raise SweepSetupError(
                "hydra.sweeper.storage is empty: a sweep keeps its study in a file so it can resume and prune "
                "(default <sweep folder>/optuna.journal)"
            )
        space, fixed = search_space(self.params, arguments)
        Path(self.config.hydra.sweep.dir).mkdir(parents=True, exist_ok=True)
        storage = open_storage(str(self.storage))
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
            raise SweepSetupError(f"hydra.sweeper.storage={self.storage}: cannot use it ({first_line(err)})") from None
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
                [*fixed, *(f"{k}={v}" for k, v in t.params.items()), f"++hydra.job.env_set.{TRIAL_ENV}={t.number}"]
                for t in batch
            ]
            self.validate_batch_is_legal(overrides)
            returns += self.launcher.launch(overrides, initial_job_idx=batch[0].number)
        return returns

    @staticmethod
    def _mark_interrupted(study: optuna.Study, trial_id: int) -> None:
        study._storage.set_trial_system_attr(trial_id, INTERRUPTED_ATTR, True)
        study._storage.set_trial_state_values(trial_id, TrialState.FAIL)

    @staticmethod
    def _tell(study: optuna.Study, trial: optuna.Trial, ret: JobReturn) -> bool:
        """Record how the trial ended; False when it failed."""
        if ret.status == JobStatus.FAILED:
            error = ret._return_value  # the job's exception (`return_value` would re-raise it)
            if isinstance(error, optuna.TrialPruned):
                log.info("trial %d %s", trial.number, error)
                study.tell(trial, state=TrialState.PRUNED)
                return True
            log.warning("trial %d failed: %s: %s", trial.number, type(error).__name__, error, exc_info=error)
            study.tell(trial, state=TrialState.FAIL)
            return False
        value = ret.return_value
        if value is None or not math.isfinite(float(value)):
            log.warning("trial %d returned %r (failed or diverged): recorded as failed", trial.number, value)
            study.tell(trial, state=TrialState.FAIL)
            return False
        study.tell(trial, float(value))
        return True

    def _write_results(self, study: optuna.Study, sweep_dir: Path) -> None:
        counts = {state.name.lower(): len(study.get_trials(deepcopy=False, states=(state,))) for state in TrialState}
        results: dict[str, Any] = {"study_name": self.study_name, "storage": str(self.storage), "trials": counts}
        if counts["complete"]:
            best = study.best_trial
            results.update(best_trial=best.number, best_value=best.value, best_params=best.params)
            log.info("best trial %d: %.4f with %s", best.number, best.value, best.params)
        OmegaConf.save(OmegaConf.create(results), sweep_dir / "optimization_results.yaml")
