"""`hydra/launcher=ray`: each job a Ray task, on a cluster started with `ray start` on every node, or
on a Ray this process starts on its own machine (`address: null`).

Written here rather than taken from hydra-ray-launcher, whose launch gets its jobs' results in turn and
so ends the whole batch on the first lost node, lets Ray retry a lost task (a trial run twice), and
pins cloudpickle<3, which joblib 1.6 refuses. Ray is imported only when this launcher is chosen.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from emotion_lab.data.sources import SPLIT_FILES, resolve_data_dir
from emotion_lab.errors import first_line
from emotion_lab.sweeps.study import WorkerLost

log = logging.getLogger(__name__)

# How long the launcher waits for a cluster address to accept a connection before saying so.
CONNECT_TIMEOUT_S = 5.0


def _run_job(
    hydra_context: HydraContext, sweep_config: DictConfig, task_function: TaskFunction, singleton_state: dict
) -> JobReturn:
    """One job in a Ray worker, as Hydra's own launchers run it in theirs."""
    setup_globals()
    Singleton.set_state(singleton_state)
    HydraConfig.instance().set_config(sweep_config)
    return run_job(
        hydra_context=hydra_context,
        task_function=task_function,
        config=sweep_config,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
    )


def _node_lacks(data_dir: str | None) -> list[str]:
    """On one node: what a trial would need there and not find."""
    import importlib.util

    missing = [] if importlib.util.find_spec("emotion_lab") else ["the emotion_lab package"]
    if data_dir and not all((Path(data_dir) / name).is_file() for name in SPLIT_FILES.values()):
        missing.append(f"the data folder {data_dir}")
    return missing


@contextmanager
def _ray_output_held() -> Iterator[None]:
    """Ray's C++ client writes each of its twenty retries after a refused token to file descriptor 2:
    held back while Ray connects and shown after, unless a refused token is what it was about."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        refused = False
        try:
            yield
        except Exception as err:
            refused = _token_refused(err)
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if not refused:
                held.seek(0)
                sys.stderr.buffer.write(held.read())
                sys.stderr.flush()


def _token_refused(err: BaseException | None) -> bool:
    """Ray wraps the head's refusal of a missing or wrong token in two connection errors, as text."""
    while err is not None:
        if "InvalidAuthToken" in str(err) or type(err).__name__ == "AuthenticationError":
            return True
        err = err.__cause__ or err.__context__
    return False


class RayLauncher(Launcher):
    # Trials may run on other machines: the sweeper serves them the study (hydra.sweeper.proxy).
    runs_trials_elsewhere = True

    def __init__(self, address: str | None, num_cpus: float, num_gpus: float, init: DictConfig | None) -> None:
        self.address, self.num_cpus, self.num_gpus = address, num_cpus, num_gpus
        self.init = OmegaConf.to_container(init, resolve=True) if init else {}
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function
        try:
            import ray
        except ImportError:
            raise SystemExit(
                "hydra/launcher=ray needs Ray on this machine and every node: pip install 'emotion_lab[ray]'"
            ) from None
        if not ray.is_initialized():
            self._check_address()
            # "local": a Ray of its own, never a cluster RAY_ADDRESS or an earlier `ray start` points to.
            options: dict[str, Any] = {"address": self.address or "local", "log_to_driver": True, **self.init}
            if self.address is None:
                options.setdefault("include_dashboard", False)
            try:
                with _ray_output_held():
                    ray.init(**options)
            except Exception as err:  # noqa: BLE001 - Ray's own connection and configuration errors
                if _token_refused(err):
                    raise SystemExit(
                        f"hydra.launcher.address={self.address}: the cluster asks for its Ray auth token and "
                        "this machine sent none or another; set RAY_AUTH_MODE=token here, with the head's "
                        "token in ~/.ray/auth_token or the file RAY_AUTH_TOKEN_PATH names (docs/clusters.md)"
                    ) from None
                raise SystemExit(
                    f"hydra.launcher.address={self.address}: Ray did not start ({first_line(err)})"
                ) from None
        self._check_nodes(ray)

    def _check_address(self) -> None:
        """A cluster address nobody answers on is one line now, not a minute of Ray's retries."""
        if not self.address or self.address == "auto" or "://" in self.address:
            return
        host, _, port = self.address.rpartition(":")
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
        except (OSError, ValueError) as err:
            raise SystemExit(
                f"hydra.launcher.address={self.address}: no Ray cluster answers there "
                f"({getattr(err, 'strerror', None) or err}); start one with `ray start --head --port=6379` "
                "on the head node, or leave the address null to start Ray on this machine"
            ) from None

    def _check_nodes(self, ray: Any) -> None:
        """Every node must import emotion_lab and hold the data where this machine found it."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        data = self.config.get("data", {})
        try:
            local = resolve_data_dir(data.get("dir"), data.get("fallback_dirs") or ())
        except Exception:  # noqa: BLE001 - the trials themselves will say what is wrong with the data
            local = None
        probe = ray.remote(_node_lacks)
        nodes = [node for node in ray.nodes() if node.get("Alive")]
        answers = [
            probe.options(
                num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
            ).remote(str(local.absolute()) if local else None)
            for node in nodes
        ]
        for node, answer in zip(nodes, answers):
            try:
                lacks = ray.get(answer)
            except ray.exceptions.RayError as err:  # the probe itself could not run there: no emotion_lab
                lacks = [f"the emotion_lab package ({first_line(err.__cause__ or err)})"]
            if lacks:
                raise SystemExit(
                    f"Ray node {node['NodeManagerAddress']} lacks {' and '.join(lacks)}: install emotion_lab on "
                    "every node and put the data at the same path on each (or a shared filesystem)"
                )
        log.info("Ray: %d node(s), %s CPU, %s GPU per trial", len(nodes), self.num_cpus, self.num_gpus)

    def study_host(self) -> str:
        """This machine's address as the cluster's nodes reach it; loopback for a Ray of its own."""
        import ray

        return ray.util.get_node_ip_address() if self.address else "127.0.0.1"

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import ray

        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        # No retries: a task lost with its node is the trial's end (interrupted), never a second run of it.
        remote = ray.remote(_run_job).options(num_cpus=self.num_cpus, num_gpus=self.num_gpus, max_retries=0)
        runs = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
            sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = f"ray_{idx}"
                sweep_config.hydra.job.num = idx
            runs.append(remote.remote(self.hydra_context, sweep_config, self.task_function, Singleton.get_state()))
        returns = []
        for idx, (overrides, run) in enumerate(zip(job_overrides, runs), start=initial_job_idx):
            try:
                returns.append(ray.get(run))
            except ray.exceptions.RayTaskError as err:  # the job could not even start there (e.g. unpickling)
                returns.append(self._failed(overrides, err.as_instanceof_cause()))
            except ray.exceptions.OutOfMemoryError as err:  # the trial's own doing: failed, not run again
                returns.append(self._failed(overrides, err))
            except ray.exceptions.RayError as err:  # its worker or node died: the trial did not end
                lost = WorkerLost(f"job {idx}: its Ray worker stopped ({type(err).__name__}: {first_line(err)})")
                returns.append(self._failed(overrides, lost))
        return returns

    @staticmethod
    def _failed(overrides: Sequence[str], error: BaseException) -> JobReturn:
        ret = JobReturn(overrides=list(overrides), status=JobStatus.FAILED)
        ret.return_value = error
        return ret
