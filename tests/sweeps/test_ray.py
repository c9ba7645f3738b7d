"""hydra/launcher=ray on a two-node Ray cluster that talks on loopback only: a node lost mid-trial,
resuming the sweep, and an address no cluster answers on."""

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from optuna.trial import TrialState

from emotion_lab.sweeps.study import INTERRUPTED_ATTR, stored_study
from emotion_lab.utils.config import PROJECT_ROOT
from tests.conftest import QUIET

pytest.importorskip("ray")

RAY = Path(sys.executable).parent / "ray"
# Ray runs its tasks at niceness 15: beside another test worker, trials would wait on it for minutes.
ENV = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
ENV["RAY_worker_niceness"] = "0"


# A cluster of the test's own token: Ray turns token auth on for a head wherever ~/.ray/auth_token exists
# (any earlier local ray.init writes one), and then every node and driver must send it.
def with_token(env: dict, token: Path) -> dict:
    return {**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}


# The GCS declares a killed node dead after 3 missed health checks a second apart (default: 5 of 3 s).
HEAD_ENV = {**ENV, "RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3"}
# The namespace is the cluster's alone, so any port is free in it; Ray's own random ports are ephemeral ones.
HEAD_PORT, HEAD_NODE_PORT, WORKER_NODE_PORT = 6379, 6381, 6382
ADDRESS = f"127.0.0.1:{HEAD_PORT}"
# Ray's servers bind 0.0.0.0 (every interface): loopback here only because the namespace has no other.
LOOPBACK_ADDRESSES = {"127.0.0.1", "0.0.0.0"}
IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
# Ray probes 8.8.8.8 for its own address on every start; inside the namespace that fails and says so.
RAY_IP_PROBE = "Failed to determine local IP via external connectivity"
SWEEP_TIMEOUT_S = 300


def tiny_ray_sweep(tmp: Path, data_dir: Path, tiny_encoder: str, hold: Path, *more: str) -> list[str]:
    return [
        "hparams_search=optuna",
        "hydra/launcher=ray",
        f"hydra.launcher.address={ADDRESS}",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.n_trials=4",
        "model.net.lstm_hidden=choice(8)",
        "model.net.attn_heads=choice(2)",
        # No F1 reaches it: every trial that runs is pruned at its first report, a quarter into epoch 1.
        "hydra/sweeper/pruner=threshold",
        "hydra.sweeper.pruner.lower=1.01",
        "hydra.sweeper.pruner.n_warmup_steps=0",
        f"model.net.encoder_name={tiny_encoder}",
        f"data.dir={data_dir}",
        f"paths.log_dir={tmp}",
        "trainer.max_epochs=2",
        "trainer.num_sanity_val_steps=0",
        "data.limit_per_split=24",
        "data.batch_size=4",
        "torch_threads=1",
        *QUIET,
        "+callbacks.hold._target_=tests.sweeps.hold.HoldTrial",
        f"+callbacks.hold.folder={hold}",
        "+callbacks.hold.trials=[0,1]",
        *more,
    ]


def train_command(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "emotion_lab.train", *args]


def wait_for(done, what: str, timeout: float, alive: subprocess.Popen | None = None, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        said = f"; its log ends:\n{log.read_text(errors='replace')[-3000:]}" if log else ""
        assert alive is None or alive.poll() is None, (
            f"{what}: the process it waits on exited ({alive.returncode}){said}"
        )
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f} s{said}"
        time.sleep(0.2)


def net_namespace(pid: int | str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:  # gone, or a zombie
        return None


def kill_namespace(holder: subprocess.Popen) -> None:
    """SIGKILL every process in the holder's network namespace, by id: `ray stop` would match every Ray
    process on the machine by name, inside the namespace or not."""
    ns = net_namespace(holder.pid)
    deadline = time.monotonic() + 30
    while ns and time.monotonic() < deadline:
        inside = [int(p) for p in os.listdir("/proc") if p.isdigit() and net_namespace(p) == ns]
        if not inside:
            break
        for pid in inside:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)
    holder.kill()
    holder.wait()


@dataclass
class Cluster:
    holder: subprocess.Popen
    worker: subprocess.Popen
    temp: Path
    env: dict  # what a node or driver needs to join: ENV with the cluster's token

    @property
    def enter(self) -> list[str]:
        return ["nsenter", "-t", str(self.holder.pid), "-n"]

    def stop_worker_node(self) -> None:
        """The worker node's machine lost: its `ray start --block` and everything it started, killed at once."""
        os.killpg(self.worker.pid, signal.SIGKILL)
        self.worker.wait()


def namespace_refused() -> str | None:
    if not all(shutil.which(tool) for tool in ("unshare", "nsenter", "ip")):
        return "needs unshare, nsenter and ip (util-linux, iproute2)"
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True)
    return f"unshare -n is not permitted here: {probe.stderr.strip()}" if probe.returncode else None


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A Ray head and one worker node, 1 CPU each, in one network namespace that has only loopback."""
    if reason := namespace_refused():
        pytest.skip(reason)
    # Ray's unix socket paths live under --temp-dir and must stay short (about 100 characters).
    temp = Path(tempfile.mkdtemp(prefix="ray"))
    logs = tmp_path_factory.mktemp("ray_nodes")
    token = temp / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    holder = subprocess.Popen(["unshare", "-n", "sleep", "infinity"])
    try:
        wait_for(lambda: net_namespace(holder.pid) not in (None, net_namespace("self")), "unshare -n", 10, holder)
        enter = ["nsenter", "-t", str(holder.pid), "-n"]
        subprocess.run([*enter, "ip", "link", "set", "lo", "up"], check=True)
        shown = subprocess.run([*enter, "ip", "-o", "addr"], check=True, capture_output=True, text=True).stdout
        assert {line.split()[1] for line in shown.splitlines()} == {"lo"}, shown  # so 0.0.0.0 is loopback here
        head = [RAY, "start", "--head", f"--port={HEAD_PORT}", f"--node-manager-port={HEAD_NODE_PORT}"]
        head += ["--num-cpus=1", "--include-dashboard=false", "--node-ip-address=127.0.0.1", "--disable-usage-stats"]
        started = subprocess.run(
            [*enter, *head, f"--temp-dir={temp}"], env=with_token(HEAD_ENV, token), capture_output=True, text=True
        )
        assert started.returncode == 0, started.stdout[-3000:] + started.stderr[-3000:]
        worker_log = logs / "worker.log"
        node = [RAY, "start", f"--address={ADDRESS}", f"--node-manager-port={WORKER_NODE_PORT}", "--num-cpus=1"]
        node += ["--node-ip-address=127.0.0.1", "--block"]
        with open(worker_log, "w") as out:
            # Its own process group, so the test can kill the node's processes all at once.
            worker = subprocess.Popen(
                [*enter, *node],
                env=with_token(ENV, token),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for(lambda: "Ray runtime started" in worker_log.read_text(), "the worker node", 120, worker, worker_log)
        yield Cluster(holder, worker, temp, with_token(ENV, token))
    finally:
        kill_namespace(holder)
        shutil.rmtree(temp, ignore_errors=True)


@dataclass
class LostNodeSweep:
    folder: Path
    log: str
    where: dict[int, dict]
    lost: int
    args: list[str]


@pytest.fixture(scope="module")
def lost_node_sweep(cluster, tmp_path_factory, data_dir, tiny_encoder) -> LostNodeSweep:
    """Trials 0 and 1 held on the two nodes; the head's let go, the worker node killed under the other."""
    tmp, hold = tmp_path_factory.mktemp("ray_sweep"), tmp_path_factory.mktemp("ray_hold")
    args = tiny_ray_sweep(tmp, data_dir, tiny_encoder, hold)
    log_file = tmp / "sweep.log"
    with open(log_file, "w") as out:
        sweep = subprocess.Popen(
            [*cluster.enter, *train_command(args)],
            cwd=PROJECT_ROOT,
            env=cluster.env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        at = {n: hold / f"at-{n}.json" for n in (0, 1)}
        wait_for(lambda: all(f.is_file() for f in at.values()), "trials 0 and 1 under way", 240, sweep, log_file)
        where = {n: json.loads(f.read_text()) for n, f in at.items()}
        (lost,) = [n for n, w in where.items() if w["node_manager_port"] == WORKER_NODE_PORT]
        (hold / f"go-{1 - lost}").touch()
        cluster.stop_worker_node()
        sweep.wait(timeout=SWEEP_TIMEOUT_S)
    finally:
        sweep.kill()
    log = log_file.read_text()
    assert sweep.returncode == 0, log[-5000:]
    (folder,) = (tmp / "train" / "multiruns").iterdir()
    return LostNodeSweep(folder, log, where, lost, args)


@pytest.mark.slow
def test_a_trial_on_a_lost_node_is_interrupted_and_the_sweep_goes_on(cluster, lost_node_sweep):
    sweep = lost_node_sweep
    assert {w["node_manager_port"] for w in sweep.where.values()} == {HEAD_NODE_PORT, WORKER_NODE_PORT}
    assert "Ray: 2 node(s)" in sweep.log
    assert re.search(r"serving the study to trials on grpc://127\.0\.0\.1:\d+ ", sweep.log)
    assert re.search(rf"trial {sweep.lost} interrupted: .*NodeDiedError", sweep.log)

    study = stored_study(sweep.folder)
    lost = study.trials[sweep.lost]
    assert lost.state == TrialState.FAIL and lost.user_attrs[INTERRUPTED_ATTR] is True
    counted = [t for t in study.trials if t.number != sweep.lost]
    assert len(counted) == 4 and not any(t.user_attrs.get(INTERRUPTED_ATTR) for t in counted)
    assert all(t.state == TrialState.PRUNED for t in counted)
    # Pruned at their first report, which reached the study through the proxy from either node.
    assert all(list(t.intermediate_values) == [0] for t in counted)
    results = OmegaConf.load(sweep.folder / "optimization_results.yaml")
    assert (results.trials.pruned, results.trials.fail) == (4, 1)

    # The cluster kept to loopback: Ray's logs from both nodes and the sweep's driver name no other address.
    addresses = set()
    for path in cluster.temp.glob("session_*/logs/**/*"):
        if path.is_file():
            lines = path.read_text(errors="replace").splitlines()
            addresses.update(a for line in lines if RAY_IP_PROBE not in line for a in IPV4.findall(line))
    assert addresses and addresses <= LOOPBACK_ADDRESSES, addresses


@pytest.mark.slow
def test_the_same_command_resumes_on_the_cluster_up_to_its_count(cluster, lost_node_sweep):
    sweep = lost_node_sweep

    def resume(*more: str) -> str:
        again = subprocess.run(
            [*cluster.enter, *train_command([*sweep.args, f"hydra.sweep.dir={sweep.folder}", *more])],
            cwd=PROJECT_ROOT,
            env=cluster.env,
            capture_output=True,
            text=True,
            timeout=SWEEP_TIMEOUT_S,
        )
        assert again.returncode == 0, (again.stdout + again.stderr)[-5000:]
        return again.stdout + again.stderr

    log = resume()  # finished: no new trial
    assert "4 of 4 trials done, resuming" in log
    assert not re.search(r"\] trial \d+: ", log)
    assert len(stored_study(sweep.folder).trials) == 5
    log = resume("hydra.sweeper.n_trials=6")  # two more, through the served study, numbered on
    assert "4 of 6 trials done, resuming" in log
    trials = stored_study(sweep.folder).trials
    assert [t.number for t in trials] == list(range(7))
    assert [t.state for t in trials[5:]] == [TrialState.PRUNED] * 2
    assert all(list(t.intermediate_values) == [0] for t in trials[5:])


@pytest.mark.slow
def test_an_address_no_cluster_answers_on_is_one_line(tmp_path, data_dir, tiny_encoder):
    with socket.socket() as free:  # a port nobody listens on once it is closed
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    args = tiny_ray_sweep(tmp_path, data_dir, tiny_encoder, tmp_path)
    args = [a.replace(ADDRESS, f"127.0.0.1:{port}") for a in args]
    result = subprocess.run(train_command(args), cwd=PROJECT_ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    (only,) = result.stderr.strip().splitlines() or [""]
    assert only.startswith(f"hydra.launcher.address=127.0.0.1:{port}: no Ray cluster answers there"), result.stderr


@pytest.mark.slow
def test_a_sweep_without_the_clusters_token_is_one_line(cluster, tmp_path, data_dir, tiny_encoder):
    args = tiny_ray_sweep(tmp_path, data_dir, tiny_encoder, tmp_path)
    result = subprocess.run(
        [*cluster.enter, *train_command(args)], cwd=PROJECT_ROOT, env=ENV, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"hydra.launcher.address={ADDRESS}: the cluster asks for its Ray auth token"), lines
    assert not (tmp_path / "train").exists()  # no sweep folder, no trial
