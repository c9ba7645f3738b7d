"""The sweep's study reached from processes that share no file with it: a PostgreSQL server, the sweep's
gRPC proxy, and trials launched by submitit."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

import emotion_lab
from emotion_lab.sweeps.proxy import serve_study
from emotion_lab.sweeps.study import is_interrupted, open_storage
from emotion_lab.tools.sweep_report import main as sweep_report
from emotion_lab.utils.config import PROJECT_ROOT
from tests.tools.test_sweeps import multirun_dir, run_train, stored_study, tiny_optuna

# A trial's process: opens the study by its spec alone, finds its trial as a sweep's job does, reports 3 steps.
REPORTER = """
import sys
from omegaconf import OmegaConf
from emotion_lab.sweeps.study import open_storage, trial_in_this_job
spec, study_name, number = sys.argv[1], sys.argv[2], int(sys.argv[3])
open_storage(spec).get_study_id_from_name(study_name)
sweeper = OmegaConf.create(
    {"study_name": study_name, "trial_storage": spec, "pruner": {"_target_": "optuna.pruners.NopPruner"}}
)
trial = trial_in_this_job(sweeper, number)
assert trial is not None, f"trial {number} not found in {spec}"
for step in range(3):
    trial.report(number + step / 10, step)
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def as_postgres(*command: str) -> list[str]:
    # The server refuses to run as root.
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else list(command)


class Postgres:
    def __init__(self, port: int, log: Path) -> None:
        self.port, self.log = port, log

    def database(self, name: str) -> str:
        """A new empty database; its SQLAlchemy URL."""
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres") as conn:
            conn.autocommit = True
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def connections(self) -> int:
        return self.log.read_text().count("connection received:")


def postgres_bin() -> Path | None:
    """The folder of PostgreSQL's server tools: on PATH, else Debian's (not on PATH by default)."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    return debian[-1].parent if debian else None


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    """A throwaway PostgreSQL server on loopback, for this module only; it logs each connection."""
    tools = postgres_bin()
    if tools is None:
        pytest.skip("PostgreSQL's initdb is neither on PATH nor in /usr/lib/postgresql/<version>/bin")
    pytest.importorskip("psycopg")
    if os.geteuid() == 0 and not shutil.which("runuser"):
        pytest.skip("running as root without runuser: the PostgreSQL server refuses root")
    folder = Path(tempfile.mkdtemp(prefix="emotion_lab_pg_"))
    data, sockets, port = folder / "data", folder / "sockets", free_port()
    sockets.mkdir()
    if os.geteuid() == 0:
        for path in (folder, sockets):
            shutil.chown(path, "postgres")
    ctl = [str(tools / "pg_ctl"), "-D", str(data)]
    try:
        subprocess.run(
            as_postgres(str(tools / "initdb"), "-A", "trust", "-U", "postgres", "-D", str(data)),
            check=True,
            capture_output=True,
            timeout=120,
        )
        options = f"-k {sockets} -c listen_addresses=127.0.0.1 -p {port} -c log_connections=on"
        subprocess.run(
            as_postgres(*ctl, "-l", str(folder / "server.log"), "-o", options, "-w", "start"),
            check=True,
            capture_output=True,
            timeout=120,
        )
        yield Postgres(port, folder / "server.log")
    finally:
        subprocess.run(as_postgres(*ctl, "-m", "immediate", "stop"), capture_output=True, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


def report_from_processes(spec: str, study_name: str, numbers: list[int], tmp_path: Path) -> None:
    """Each trial reports from its own Python process, in its own empty folder, given only the spec."""
    # The package under test, wherever it is imported from here; its code, not a file the processes share.
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(Path(emotion_lab.__file__).parents[1])}
    children = []
    for number in numbers:
        cwd = tmp_path / f"process-{number}"
        cwd.mkdir()
        command = [sys.executable, "-c", REPORTER, spec, study_name, str(number)]
        children.append(subprocess.Popen(command, cwd=cwd, env=env, stderr=subprocess.PIPE, text=True))
    for child in children:
        _, err = child.communicate(timeout=120)
        assert child.returncode == 0, err[-3000:]


def two_running_trials(storage: optuna.storages.BaseStorage, study_name: str) -> optuna.Study:
    study = optuna.create_study(study_name=study_name, storage=storage)
    assert [study.ask().number for _ in range(2)] == [0, 1]
    return study


@pytest.mark.slow
def test_trials_in_separate_processes_report_to_a_postgres_study(postgres, tmp_path):
    url = postgres.database("reports")
    study = two_running_trials(open_storage(url), "shared")
    report_from_processes(url, "shared", [0, 1], tmp_path)
    trials = study.get_trials()
    assert [t.intermediate_values for t in trials] == [{0: 0.0, 1: 0.1, 2: 0.2}, {0: 1.0, 1: 1.1, 2: 1.2}]
    assert [t.state for t in trials] == [TrialState.RUNNING] * 2  # the sweep, not the trial, tells how it ended


@pytest.mark.slow
def test_trials_in_separate_processes_report_through_the_sweeps_grpc_proxy(tmp_path):
    database = tmp_path / "sweep" / "optuna.db"
    storage = open_storage(f"sqlite:///{database}")
    two_running_trials(storage, "served")
    address = serve_study(storage, "127.0.0.1", 0)
    assert address.startswith("grpc://127.0.0.1:")
    report_from_processes(address, "served", [0, 1], tmp_path)
    trials = optuna.load_study(study_name="served", storage=f"sqlite:///{database}").get_trials()
    assert [t.intermediate_values for t in trials] == [{0: 0.0, 1: 0.1, 2: 0.2}, {0: 1.0, 1: 1.1, 2: 1.2}]


@pytest.mark.slow
def test_a_parallel_sweep_keeps_its_study_in_postgres_and_its_report_leaves_it_alone(
    postgres, tmp_path, data_dir, tiny_encoder, capsys
):
    url = postgres.database("sweep")
    parallel = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweeper.n_jobs=2", "torch_threads=1"]
    # Batches of 4: three reports a quarter epoch apart, from each joblib worker to the server.
    args = ["hydra.sweeper.n_trials=2", f"hydra.sweeper.storage='{url}'", "data.batch_size=4", *parallel]
    result = run_train(tiny_optuna(tmp_path, data_dir, tiny_encoder, *args))
    assert result.returncode == 0, result.stderr[-3000:]
    folder = multirun_dir(tmp_path)
    record = json.loads((folder / "study.yaml").read_text())
    assert record["storage"] == url
    trials = optuna.load_study(study_name=record["study_name"], storage=url).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    assert [list(t.intermediate_values) for t in trials] == [[0, 1, 2]] * 2
    before = postgres.connections()
    report = subprocess.run(
        [sys.executable, "-m", "emotion_lab.tools.sweep_report", str(folder)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert report.returncode == 0, report.stderr[-3000:]
    assert "lies outside the sweep folder and was not opened" in report.stderr
    assert postgres.connections() == before  # the server saw no connection from the report
    assert sweep_report([str(folder), "--storage", url]) == 0  # passed by the user: read, so the log counts it
    assert postgres.connections() > before
    assert capsys.readouterr().out.count("| ok |") == 2


@pytest.mark.slow
def test_submitit_trials_report_and_are_pruned_through_the_sweep(tmp_path, data_dir, tiny_encoder):
    # A threshold no F1 reaches: each trial is pruned at its first report, a quarter into its first epoch,
    # a decision its submitit process takes from the study and the sweep records from the job's return.
    launcher = ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5", "hydra.launcher.cpus_per_task=1"]
    pruner = ["hydra/sweeper/pruner=threshold", "hydra.sweeper.pruner.lower=1.01"]
    pruner += ["hydra.sweeper.pruner.n_warmup_steps=0"]  # judged from the first report on
    args = ["hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2", "torch_threads=1", *launcher, *pruner]
    args += ["data.batch_size=4", "trainer.max_epochs=2"]
    result = run_train(tiny_optuna(tmp_path, data_dir, tiny_encoder, *args))
    assert result.returncode == 0, result.stderr[-3000:]
    folder = multirun_dir(tmp_path)
    trials = stored_study(folder).trials
    assert [t.number for t in trials if not is_interrupted(t)] == [0, 1]
    assert [t.state for t in trials] == [TrialState.PRUNED] * 2
    for trial in trials:
        assert list(trial.intermediate_values) == [0] and trial.value == trial.intermediate_values[0]
        metrics = json.loads((folder / str(trial.number) / "metrics.json").read_text())
        assert metrics["status"] == "pruned after 0.25 epochs" and metrics["pruned_at_step"] == 0
    assert (folder / ".submitit").is_dir()  # run by submitit, not in the sweep's process


@pytest.mark.slow
def test_a_submitit_job_killed_mid_trial_ends_only_its_own_trial(tmp_path, data_dir, tiny_encoder):
    import signal
    import time

    hold = tmp_path / "hold"
    hold.mkdir()
    launcher = ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5", "hydra.launcher.cpus_per_task=1"]
    pruner = [
        "hydra/sweeper/pruner=threshold",
        "hydra.sweeper.pruner.lower=1.01",
        "hydra.sweeper.pruner.n_warmup_steps=0",
    ]
    args = ["hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2", "torch_threads=1", *launcher, *pruner]
    args += ["data.batch_size=4", "trainer.max_epochs=2", "+callbacks.hold._target_=tests.sweeps.hold.HoldTrial"]
    args += [f"+callbacks.hold.folder={hold}", "+callbacks.hold.trials=[0,1]"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, "-m", "emotion_lab.train", *tiny_optuna(tmp_path, data_dir, tiny_encoder, *args)]
    sweep = subprocess.Popen(
        command, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 240
        while not all((hold / f"at-{n}.json").exists() for n in (0, 1)):
            assert sweep.poll() is None and time.monotonic() < deadline, "the two trials never started"
            time.sleep(0.5)
        # Trial 1's job dies under it (its process killed, as a lost node or SLURM's time limit would);
        # trial 0 goes on and finishes.
        os.kill(json.loads((hold / "at-1.json").read_text())["pid"], signal.SIGKILL)
        (hold / "go-0").touch()
        log, _ = sweep.communicate(timeout=300)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert sweep.returncode == 0, log[-3000:]
    trials = stored_study(multirun_dir(tmp_path)).trials
    assert [t.state for t in trials] == [TrialState.PRUNED, TrialState.FAIL, TrialState.PRUNED]
    assert trials[1].user_attrs["interrupted"] is True and not is_interrupted(trials[0])
    assert "trial 1 interrupted: job 1: ended without a result" in log
