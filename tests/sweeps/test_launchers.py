"""Sweeps that cannot start say so in one line, before any trial; the pruning callback's report schedule."""

import os
import subprocess
import sys
from types import SimpleNamespace

import optuna
import pytest

from emotion_lab.callbacks.pruning import OptunaPruning
from emotion_lab.utils.config import PROJECT_ROOT
from tests.conftest import QUIET


def sweep(tmp_path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "emotion_lab.train",
            "hparams_search=optuna",
            f"paths.log_dir={tmp_path}",
            *QUIET,
            *args,
        ],
        cwd=PROJECT_ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore", **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def no_trial_ran(tmp_path) -> bool:
    return not any(p.name.isdigit() for p in tmp_path.rglob("*") if p.is_dir())


@pytest.mark.slow
def test_the_ray_launcher_without_ray_installed_is_one_line(tmp_path):
    fake = tmp_path / "site"
    (fake / "ray").mkdir(parents=True)
    (fake / "ray" / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    result = sweep(tmp_path, "hydra/launcher=ray", env={"PYTHONPATH": str(fake)})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "hydra/launcher=ray needs Ray on this machine and every node: pip install 'emotion_lab[ray]'"
    ]
    assert no_trial_ran(tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["hydra.sweeper.proxy.enabled=true", "hydra.sweeper.storage=study.journal"],
            "hydra.sweeper.storage=study.journal: a journal file cannot be served to trials on other machines",
        ),
        (
            ["hydra.sweeper.proxy.enabled=maybe"],
            "hydra.sweeper.proxy.enabled='maybe': allowed values are auto, true, false",
        ),
        (
            ["hydra.sweeper.storage=grpc://127.0.0.1:1"],
            "hydra.sweeper.storage=grpc://127.0.0.1:1: the sweep serves its own",
        ),
    ],
)
def test_a_study_that_cannot_be_served_is_one_line_before_any_trial(tmp_path, args, line):
    result = sweep(tmp_path, *args)
    assert result.returncode == 1
    (only,) = result.stderr.strip().splitlines()
    assert only.startswith(line)
    assert no_trial_ran(tmp_path)


class RecordingTrial:
    def __init__(self) -> None:
        self.reports: list[tuple[int, float]] = []
        self.study = SimpleNamespace(pruner=optuna.pruners.MedianPruner())

    def report(self, value: float, step: int) -> None:
        self.reports.append((step, value))

    def should_prune(self) -> bool:
        return False


def test_reports_fall_after_each_quarter_and_at_the_epochs_end_but_the_last():
    callback = OptunaPruning(reports_per_epoch=4, subset=8)
    callback._trial = trial = RecordingTrial()
    callback._subset_f1 = lambda trainer, module: 0.5  # the scoring itself runs in the sweep tests
    trainer = SimpleNamespace(
        num_training_batches=6, max_epochs=2, should_stop=False, sanity_checking=False, callback_metrics={}
    )
    trainer.state = SimpleNamespace(fn="fit")
    for epoch in range(2):
        module = SimpleNamespace(current_epoch=epoch)
        callback.on_train_epoch_start(trainer, module)
        for batch_idx in range(6):
            callback.on_train_batch_end(trainer, module, None, None, batch_idx)
        trainer.callback_metrics = {"val/f1_weighted": 0.9}
        callback.on_validation_end(trainer, module)
    # Quarters end after batches 2 (round 1.5), 3 and 4 (round 4.5) of 6; epoch 1's end (step 7) is not judged.
    assert trial.reports == [(0, 0.5), (1, 0.5), (2, 0.5), (3, 0.9), (4, 0.5), (5, 0.5), (6, 0.5)]
    assert callback.epochs_at(0) == 0.25 and callback.epochs_at(3) == 1.0


def test_an_epoch_shorter_than_its_reports_skips_parts_without_repeating_a_step():
    callback = OptunaPruning(reports_per_epoch=4, subset=8)
    callback._trial = trial = RecordingTrial()
    callback._subset_f1 = lambda trainer, module: 0.5
    trainer = SimpleNamespace(num_training_batches=2, should_stop=False)
    module = SimpleNamespace(current_epoch=0)
    callback.on_train_epoch_start(trainer, module)
    for batch_idx in range(2):
        callback.on_train_batch_end(trainer, module, None, None, batch_idx)
    assert trial.reports == [(1, 0.5)]  # only the half-way point ends after a whole batch (of 2)


def test_the_subset_score_is_the_weighted_f1_of_batches_spread_over_validation_and_modes_are_restored():
    import contextlib

    import torch
    from sklearn.metrics import f1_score

    generator = torch.Generator().manual_seed(0)
    batches = [
        {"x": torch.randn(4, 6, generator=generator), "labels": torch.randint(0, 6, (4,), generator=generator)}
        for _ in range(8)
    ]

    class Head(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.frozen = torch.nn.Dropout(0.5).eval()  # kept in eval mode while the rest trains
            self.device = torch.device("cpu")

        def logits(self, batch):
            return self.frozen(batch["x"])

        def transfer_batch_to_device(self, batch, device, index):
            return batch

    head = Head().train()
    head.frozen.eval()
    trainer = SimpleNamespace(
        val_dataloaders=batches, precision_plugin=SimpleNamespace(forward_context=contextlib.nullcontext)
    )
    score = OptunaPruning(subset=8)._subset_f1(trainer, head)
    chosen = [batches[0], batches[7]]  # 8 sentences = 2 batches of 4, the first and the last of 8
    preds = torch.cat([b["x"] for b in chosen]).argmax(-1)
    target = torch.cat([b["labels"] for b in chosen])
    assert score == pytest.approx(f1_score(target, preds, average="weighted", labels=range(6), zero_division=0))
    assert head.training and not head.frozen.training


def test_a_proxy_address_this_machine_cannot_listen_on_is_one_line(tmp_path, monkeypatch):
    import errno
    import socket

    from emotion_lab.sweeps import proxy
    from emotion_lab.sweeps.study import SweepSetupError, open_storage

    storage = open_storage(f"sqlite:///{tmp_path / 'optuna.db'}")

    def refuse(sock, address):  # what bind says for an address no interface of this machine has
        raise OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address")

    with monkeypatch.context() as patched:
        patched.setattr(socket.socket, "bind", refuse)
        with pytest.raises(SweepSetupError, match=r"^hydra.sweeper.proxy.host=10.1.2.3: cannot listen there \(Cannot"):
            proxy.serve_study(storage, "10.1.2.3", 0)

    # A port something else listens on: the proxy cannot start, and the sweep says so in one line.
    taken_line = r"^hydra.sweeper.proxy.port={}: something on 127.0.0.1 listens there already"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SweepSetupError, match=taken_line.format(port)):
            proxy.serve_study(storage, "127.0.0.1", port)

    # Another sweep's proxy on a fixed port: gRPC would share it (SO_REUSEPORT) and split the trials
    # between two studies; the second sweep is refused instead.
    served = proxy.serve_study(storage, "127.0.0.1", 0)
    port = int(served.rpartition(":")[2])
    other = open_storage(f"sqlite:///{tmp_path / 'other.db'}")
    with pytest.raises(SweepSetupError, match=taken_line.format(port)):
        proxy.serve_study(other, "127.0.0.1", port)


def test_the_ray_node_check_names_a_node_without_the_data(tmp_path, data_dir):
    pytest.importorskip("ray")
    from omegaconf import OmegaConf

    from hydra_plugins.emotion_lab_sweeper import ray_launcher

    HEAD = "a" * 56  # Ray's node ids are 28 bytes in hex

    class Probe:
        """ray.remote(fn) run in this process: node 1 answers as if the data folder were missing there."""

        def __init__(self, fn) -> None:
            self.fn, self.node = fn, None

        def options(self, scheduling_strategy, **_):
            self.node = scheduling_strategy.node_id
            return self

        def remote(self, data_dir):
            return self.fn(data_dir if self.node == HEAD else str(tmp_path / "elsewhere"))

    fake_ray = SimpleNamespace(
        remote=Probe,
        get=lambda answer: answer,
        exceptions=SimpleNamespace(RayError=RuntimeError),
        nodes=lambda: [
            {"NodeID": HEAD, "Alive": True, "NodeManagerAddress": "10.0.0.1"},
            {"NodeID": "b" * 56, "Alive": True, "NodeManagerAddress": "10.0.0.2"},
        ],
    )
    launcher = ray_launcher.RayLauncher(address=None, num_cpus=1, num_gpus=0, init=None)
    launcher.config = OmegaConf.create({"data": {"dir": str(data_dir), "fallback_dirs": []}})
    with pytest.raises(SystemExit) as stopped:
        launcher._check_nodes(fake_ray)
    assert str(stopped.value) == (
        f"Ray node 10.0.0.2 lacks the data folder {tmp_path / 'elsewhere'}: install emotion_lab on every node "
        "and put the data at the same path on each (or a shared filesystem)"
    )


@pytest.mark.parametrize(
    "value", ["plain/path.journal", "with space/and 'quote'", "C:\\dir\\x", "ends\\", "a\\'b", "${oops}"]
)
def test_a_storage_passed_to_trials_parses_back_to_itself(value):
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    from emotion_lab.sweeps.study import hydra_quoted

    override = OverridesParser.create().parse_override(f"hydra.sweeper.trial_storage={hydra_quoted(value)}")
    assert OmegaConf.create({"trial_storage": override.value()}).trial_storage == value  # as the trial reads it


def test_a_launcher_whose_extra_is_missing_is_one_line_naming_the_extra(monkeypatch, capsys):
    import importlib.util

    from emotion_lab import train
    from emotion_lab.sweeps.extras import missing_launcher

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "hydra_plugins.hydra_submitit_launcher" else real_find_spec(name, *a),
    )
    assert missing_launcher(["hparams_search=optuna", "hydra/launcher=joblib"]) is None
    monkeypatch.setattr("sys.argv", ["train", "hparams_search=optuna", "hydra/launcher=submitit_slurm", "-m"])
    with pytest.raises(SystemExit) as stopped:
        train.cli()
    assert stopped.value.code == 2
    assert capsys.readouterr().err == (
        "error: hydra/launcher=submitit_slurm needs the slurm extra: pip install 'emotion_lab[slurm]'\n"
    )


def test_a_ray_trial_out_of_memory_fails_and_one_whose_node_died_is_interrupted(tmp_path, monkeypatch):
    pytest.importorskip("ray")
    import ray.exceptions
    from hydra.core.utils import JobStatus
    from omegaconf import OmegaConf

    from emotion_lab.sweeps.study import WorkerLost
    from hydra_plugins.emotion_lab_sweeper import ray_launcher

    ends = {
        0: ray.exceptions.OutOfMemoryError("Task was killed due to the node running low on memory."),
        1: ray.exceptions.NodeDiedError("the node died"),
    }

    class Remote:
        def options(self, **_):
            return self

        def remote(self, hydra_context, sweep_config, task_function, state):
            return sweep_config.hydra.job.num

    def get(idx):
        raise ends[idx]

    fake_ray = SimpleNamespace(remote=lambda fn: Remote(), get=get, exceptions=ray.exceptions)
    monkeypatch.setitem(sys.modules, "ray", fake_ray)
    launcher = ray_launcher.RayLauncher(address=None, num_cpus=1, num_gpus=0, init=None)
    launcher.config = OmegaConf.create(
        {"hydra": {"sweep": {"dir": str(tmp_path)}, "hydra_logging": {"root": None}, "verbose": False}}
    )
    loader = SimpleNamespace(load_sweep_config=lambda config, overrides: OmegaConf.create({"hydra": {"job": {}}}))
    launcher.hydra_context = SimpleNamespace(config_loader=loader)
    returns = launcher.launch([["a=1"], ["a=2"]], initial_job_idx=0)
    assert [r.status for r in returns] == [JobStatus.FAILED] * 2
    assert isinstance(returns[0]._return_value, ray.exceptions.OutOfMemoryError)  # failed: not run again
    assert isinstance(returns[1]._return_value, WorkerLost)  # interrupted: the sweep runs another
