"""`hydra/sweeper=optuna_study`: Hydra's `-m` driven by a current Optuna study, stored and resumable.

Hydra finds this plugin by its package (`hydra_plugins.*`); its options live in
`conf/hydra/sweeper/optuna_study.yaml`, the sampler and pruner in the groups beside it. Each batch of
`n_jobs` trials is asked from the study, launched through the configured launcher (trial number =
job number = the trial's folder), and told back as complete, pruned or failed.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import optuna
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

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
        sampler: optuna.samplers.BaseSampler,
        pruner: optuna.pruners.BasePruner,
        direction: str,
        study_name: str,
        storage: str | None,
        n_trials: int,
        n_jobs: int,
        max_failure_rate: float,
        params: DictConfig | None,
    ) -> None:
        if direction not in ("maximize", "minimize"):
            raise SweepSetupError(f"hydra.sweeper.direction={direction!r}: allowed values are maximize, minimize")
        if not storage:
            raise SweepSetupError(
                "hydra.sweeper.storage is empty: a sweep keeps its study in a file so it can resume and prune "
                "(default ${hydra.sweep.dir}/optuna.journal)"
            )
        self.sampler, self.pruner = sampler, pruner
        self.direction, self.study_name, self.storage = direction, study_name, str(storage)
        self.n_trials, self.n_jobs, self.max_failure_rate = n_trials, max(1, n_jobs), max_failure_rate
        self.params = OmegaConf.to_container(params) if params else {}

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> optuna.Study:
        try:
            space, fixed = search_space(self.params, arguments)
            storage = open_storage(self.storage)
            optuna.logging.set_verbosity(optuna.logging.WARNING)
            study = optuna.create_study(
                study_name=self.study_name,
                storage=storage,
                sampler=self.sampler,
                pruner=self.pruner,
                direction=self.direction,
                load_if_exists=True,
            )
            check_same_search(study, space_signature(space, self.direction), self.storage)
        except SweepSetupError as err:
            raise SystemExit(str(err)) from None  # one line, before any trial runs
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
            study._storage.set_trial_system_attr(trial._trial_id, INTERRUPTED_ATTR, True)
            study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        done = sum(not t.system_attrs.get(INTERRUPTED_ATTR) for t in study.get_trials(deepcopy=False))
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        record_study(sweep_dir, self.study_name, self.storage)
        log.info(
            "study %r in %s: %d of %d trials done%s; sampler %s, pruner %s",
            self.study_name,
            self.storage,
            done,
            self.n_trials,
            ", resuming" if done else "",
            type(self.sampler).__name__,
            type(self.pruner).__name__,
        )
        failures = 0
        while done < self.n_trials:
            trials = [study.ask(space) for _ in range(min(self.n_jobs, self.n_trials - done))]
            for trial in trials:
                log.info("trial %d: %s", trial.number, " ".join(f"{k}={v}" for k, v in trial.params.items()))
            batch = [
                [
                    *fixed,
                    *(f"{k}={v}" for k, v in trial.params.items()),
                    f"++hydra.job.env_set.{TRIAL_ENV}={trial.number}",
                ]
                for trial in trials
            ]
            self.validate_batch_is_legal(batch)
            # One sweeper per study: its trials are numbered consecutively, so job numbers follow them.
            returns = self.launcher.launch(batch, initial_job_idx=trials[0].number)
            for trial, ret in zip(trials, returns):
                failures += not self._tell(study, trial, ret)
            done += len(trials)
            if failures / done > self.max_failure_rate:
                raise SweepSetupError(
                    f"{failures} of {done} trials failed, above hydra.sweeper.max_failure_rate={self.max_failure_rate}"
                )
        self._write_results(study, sweep_dir)
        return study

    @staticmethod
    def _tell(study: optuna.Study, trial: optuna.Trial, ret: Any) -> bool:
        """Record how the trial ended; False when it failed."""
        try:
            value = ret.return_value  # re-raises what the job raised
        except optuna.TrialPruned as pruned:
            log.info("trial %d pruned: %s", trial.number, pruned)
            study.tell(trial, state=TrialState.PRUNED)
            return True
        except Exception as err:  # noqa: BLE001 - one trial's crash is recorded; the sweep goes on
            log.warning("trial %d failed: %s: %s", trial.number, type(err).__name__, err)
            study.tell(trial, state=TrialState.FAIL)
            return False
        if value is None or not math.isfinite(float(value)):
            log.warning("trial %d returned %r: recorded as failed", trial.number, value)
            study.tell(trial, state=TrialState.FAIL)
            return False
        study.tell(trial, float(value))
        return True

    def _write_results(self, study: optuna.Study, sweep_dir: Path) -> None:
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        counts = {state.name.lower(): len(study.get_trials(deepcopy=False, states=(state,))) for state in TrialState}
        results: dict[str, Any] = {"study_name": self.study_name, "storage": self.storage, "trials": counts}
        if complete:
            best = study.best_trial
            results.update(best_trial=best.number, best_value=best.value, best_params=best.params)
            log.info("best trial %d: %s = %.4f, %s", best.number, "value", best.value, best.params)
        OmegaConf.save(OmegaConf.create(results), sweep_dir / "optimization_results.yaml")
