"""Sweeps: Optuna and grid configs, failed trials, the summary table, joblib and DDP."""

import csv
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from omegaconf import OmegaConf
from optuna.trial import TrialState

from emotion_lab.report import main as report_main
from emotion_lab.sweeps.study import open_storage
from emotion_lab.tools.sweep_report import main as sweep_report
from emotion_lab.utils.config import PROJECT_ROOT
from tests.conftest import QUIET
from tests.sweeps.test_study import no_connection  # noqa: F401 - a fixture


def run_train(args: list[str], timeout: int = 400) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "emotion_lab.train", *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def tiny(tmp_path, data_dir, tiny_encoder) -> list[str]:
    return [
        f"model.net.encoder_name={tiny_encoder}",
        f"data.dir={data_dir}",
        f"paths.log_dir={tmp_path}",
        "trainer.max_epochs=1",
        "trainer.num_sanity_val_steps=0",
        "data.limit_per_split=24",
        *QUIET,
    ]


def multirun_dir(tmp_path: Path) -> Path:
    (folder,) = (tmp_path / "train" / "multiruns").iterdir()
    return folder


@pytest.mark.slow
def test_optuna_sweep_runs_trials_and_records_a_failed_one(tmp_path, data_dir, tiny_encoder, capsys):
    # The real search space with tiny widths, plus 3 heads, which cannot divide 2*lstm_hidden=16:
    # command-line sweeps replace the config's search space for their keys.
    result = run_train(
        [
            "hparams_search=optuna",
            "hydra/sweeper/pruner=median",  # never stops the first 5 trials: each one completes or fails
            "hydra.sweeper.n_trials=4",
            "model.net.attn_heads=choice(2,3)",
            "model.net.lstm_hidden=choice(8)",
            *tiny(tmp_path, data_dir, tiny_encoder),
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    folder = multirun_dir(tmp_path)
    results = OmegaConf.load(folder / "optimization_results.yaml")
    assert results.trials.complete + results.trials.fail == 4 and results.best_trial in range(4)
    assert sweep_report([str(folder)]) == 0
    rows = list(csv.DictReader((folder / "sweep_summary.csv").open()))
    assert len(rows) == 4
    failed = [r for r in rows if r["status"] != "ok"]
    assert failed and all("attn_heads=3 must divide" in r["status"] for r in failed)
    assert len(failed) < 4 and rows[0]["status"] == "ok"  # the sweep went on; best trial first
    assert results.trials.fail == len(failed)  # in the study too: failed, not complete with a made-up score


@pytest.mark.slow
def test_grid_sweep_with_joblib_launcher_and_summary(tmp_path, data_dir, tiny_encoder, capsys):
    result = run_train(
        [
            "-m",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            "torch_threads=1",
            "model.net.lstm_hidden=8",
            "model.net.attn_heads=2,3",
            *tiny(tmp_path, data_dir, tiny_encoder),
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    folder = multirun_dir(tmp_path)
    assert sweep_report([str(folder)]) == 0
    rows = list(csv.DictReader((folder / "sweep_summary.csv").open()))
    assert rows[0]["status"] == "ok" and rows[1]["status"].startswith("failed: model.net.attn_heads=3")
    assert "attn_heads=2" in rows[0]["overrides"] and 0 <= float(rows[0]["val/f1_weighted"]) <= 1
    assert rows[0]["val_f1/surprise"] != "" and "| trial |" in capsys.readouterr().out


@pytest.mark.slow
def test_ddp_fast_dev_run_on_two_cpu_processes(tmp_path, data_dir, tiny_encoder):
    result = run_train(
        [
            "trainer=ddp",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            "debug=fdr",
            *tiny(tmp_path, data_dir, tiny_encoder),
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "distributed_backend=gloo" in result.stderr + result.stdout


def tiny_optuna(tmp_path, data_dir, tiny_encoder, *more: str) -> list[str]:
    # Unless a test picks its pruner: the median pruner, which never stops a study's first 5 trials, so
    # these trials all finish whatever their scores (the default, successive halving, judges the second).
    pruner = [] if any(arg.startswith("hydra/sweeper/pruner=") for arg in more) else ["hydra/sweeper/pruner=median"]
    return [
        "hparams_search=optuna",
        *pruner,
        "model.net.lstm_hidden=choice(8)",
        "model.net.attn_heads=choice(2)",
        "hydra.sweeper.params={model.optimizer.lr: 'tag(log, interval(1e-4, 3e-3))'}",
        *tiny(tmp_path, data_dir, tiny_encoder),
        *more,
    ]


def stored_study(folder: Path) -> optuna.Study:
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(folder / "optuna.journal")))
    return optuna.load_study(study_name="emotion_head", storage=storage)


@pytest.mark.slow
def test_pruned_trials_stop_early_and_are_recorded_as_pruned(tmp_path, data_dir, tiny_encoder, capsys):
    # A threshold no F1 reaches prunes every trial at its first report, a quarter into its first epoch
    # (6 batches of 4), deterministically. The two trials run as parallel joblib processes, each
    # reporting to the study's one journal file.
    args = ["hydra.sweeper.n_trials=2", "trainer.max_epochs=3", "hydra/sweeper/pruner=threshold", "data.batch_size=4"]
    args += ["hydra.sweeper.pruner.lower=1.01", "hydra.sweeper.pruner.n_warmup_steps=0", "logger=tensorboard"]
    args += ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweeper.n_jobs=2", "torch_threads=1"]
    result = run_train(tiny_optuna(tmp_path, data_dir, tiny_encoder, *args))
    assert result.returncode == 0, result.stderr[-3000:]
    folder = multirun_dir(tmp_path)
    study = stored_study(folder)
    assert [t.state for t in study.trials] == [TrialState.PRUNED] * 2
    assert all(list(t.intermediate_values) == [0] for t in study.trials)  # reported once, then stopped
    for trial in ("0", "1"):
        metrics = json.loads((folder / trial / "metrics.json").read_text())
        assert metrics["status"] == "pruned after 0.25 epochs" and metrics["pruned_at_step"] == 0
        assert metrics["steps"] == 2  # stopped after the first quarter's 2 of 6 batches, not at the epoch's end
    assert sweep_report([str(folder)]) == 0
    rows = list(csv.DictReader((folder / "sweep_summary.csv").open()))
    assert [r["status"] for r in rows] == ["pruned after 0.25 epochs"] * 2
    assert report_main([str(folder)]) == 0
    assert "2 trials (2 pruned)" in (folder / "report.md").read_text()
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams import plugin_data_pb2

    statuses = []
    for events in (folder / "0" / "tensorboard").rglob("events.out.tfevents.*"):
        for event in EventFileLoader(str(events)).Load():
            for value in event.summary.value:
                if value.tag == "_hparams_/session_start_info":
                    data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
                    statuses.append(data.session_start_info.hparams["status"].string_value)
    assert statuses == ["pruned after 0.25 epochs"]


@pytest.mark.slow
def test_a_stored_study_resumes_where_it_stopped(tmp_path, data_dir, tiny_encoder):
    first = run_train(tiny_optuna(tmp_path, data_dir, tiny_encoder, "hydra.sweeper.n_trials=2"))
    assert first.returncode == 0, first.stderr[-3000:]
    folder = multirun_dir(tmp_path)
    before = {t.number: t.params for t in stored_study(folder).trials}
    # An interrupted sweep leaves its running trial behind: failed on resume, not counted.
    stored_study(folder).ask()
    # A pruner that stops every trial it judges: one-epoch trials end complete, their last epoch is never judged.
    prune_all = ["hydra/sweeper/pruner=threshold", "hydra.sweeper.pruner.lower=1.01"]
    again = run_train(
        tiny_optuna(
            tmp_path, data_dir, tiny_encoder, "hydra.sweeper.n_trials=4", f"hydra.sweep.dir={folder}", *prune_all
        )
    )
    assert again.returncode == 0, again.stderr[-3000:]
    trials = stored_study(folder).trials
    assert [t.number for t in trials] == [0, 1, 2, 3, 4]
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2 + [TrialState.FAIL] + [TrialState.COMPLETE] * 2
    assert {t.number: t.params for t in trials[:2]} == before  # the finished trials were not run again
    # The resumed sampler does not draw the same start-up trials again.
    assert all(t.params not in before.values() for t in trials[3:])
    assert sorted(p.name for p in folder.iterdir() if p.name.isdigit()) == ["0", "1", "3", "4"]


@pytest.mark.slow
def test_a_study_over_another_search_space_stops_before_any_trial(tmp_path, data_dir, tiny_encoder):
    first = run_train(tiny_optuna(tmp_path, data_dir, tiny_encoder, "hydra.sweeper.n_trials=1"))
    assert first.returncode == 0, first.stderr[-3000:]
    folder = multirun_dir(tmp_path)
    other = tiny_optuna(tmp_path, data_dir, tiny_encoder, "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={folder}")
    result = run_train([*other, "model.net.dropout=interval(0.0, 0.3)"])
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        f"hydra.sweeper.storage={folder}/optuna.journal already holds study 'emotion_head' over another search "
        "space (differs in: model.net.dropout); start a new one with hydra.sweeper.study_name=<new name> or a new "
        "hydra.sweep.dir"
    ]
    assert len(stored_study(folder).trials) == 1


def test_an_unwritable_storage_stops_before_any_trial(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    args = ["hparams_search=optuna", f"hydra.sweeper.storage={blocker}/study.journal", f"paths.log_dir={tmp_path}"]
    result = run_train(args, timeout=120)
    assert result.returncode != 0
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"hydra.sweeper.storage={blocker}/study.journal: cannot write there")
    assert not list((tmp_path / "train" / "multiruns").glob("*/0"))  # no trial ran


def test_an_unknown_pruner_is_a_config_error_naming_the_allowed_ones(tmp_path):
    result = run_train(["hparams_search=optuna", "hydra/sweeper/pruner=hyperband_typo"], timeout=120)
    assert result.returncode != 0
    assert "Available options in 'hydra/sweeper/pruner'" in result.stderr
    assert all(name in result.stderr for name in ("median", "none", "successive_halving", "threshold"))


def test_report_on_a_missing_folder_is_one_line(tmp_path, capsys):
    assert sweep_report([str(tmp_path / "nope")]) == 2
    assert "not a folder" in capsys.readouterr().err


def write_trial(folder: Path, overrides: list[str], metrics: dict | None) -> None:
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps(metrics))


def test_report_names_shared_overrides_once_and_keeps_exact_values_in_the_csv(tmp_path, capsys):
    shared = ["hparams_search=optuna", "experiment=cached_head"]
    write_trial(tmp_path / "0", ["model.optimizer.lr=0.0016009195245406263", *shared], {"val/f1_weighted": 0.8})
    write_trial(tmp_path / "1", ["model.optimizer.lr=0.00030000000000000003", *shared], {"val/f1_weighted": 0.9})
    write_trial(tmp_path / "2", ["model.net.attn_heads=3", *shared], {"status": "failed: attn_heads=3 must divide"})
    write_trial(tmp_path / "10", ["model.net.lstm_hidden=512", *shared], None)
    assert sweep_report([str(tmp_path)]) == 0
    table = capsys.readouterr().out
    assert table.startswith("Every trial: `hparams_search=optuna experiment=cached_head`")
    body = [line for line in table.splitlines() if line.startswith("| ")][1:]
    assert [line.split(" | ")[0] for line in body] == ["| 1", "| 0", "| 2", "| 10"]  # best first, then the rest
    assert "| model.optimizer.lr=0.0003 |" in body[0] and "experiment=" not in "".join(body)
    assert "model.net.lstm_hidden=512 |" in body[3] and "incomplete" in body[3]
    rows = list(csv.DictReader((tmp_path / "sweep_summary.csv").open()))
    assert rows[0]["overrides"] == " ".join(["model.optimizer.lr=0.00030000000000000003", *shared])


def test_report_reads_a_study_outside_the_folder_only_when_passed(tmp_path, capsys):
    sweep, elsewhere = tmp_path / "sweep", tmp_path / "elsewhere"
    url = f"sqlite:///{elsewhere}/study.db"
    study = optuna.create_study(study_name="head", storage=open_storage(url))
    study.tell(study.ask(), state=TrialState.PRUNED)
    write_trial(sweep / "0", ["model.net.dropout=0.1"], None)  # no metrics: the study says how it ended
    (sweep / "study.yaml").write_text(json.dumps({"study_name": "head", "storage": url}))
    before = {p.name: p.read_bytes() for p in elsewhere.iterdir()}
    assert sweep_report([str(sweep)]) == 0
    out, err = capsys.readouterr()
    assert err.splitlines() == [
        f"note: {sweep}/study.yaml: its study storage {url} lies outside the sweep folder and was not opened; "
        f"to read it, pass --storage {url}"
    ]
    assert "| 0 | incomplete |" in out
    assert sweep_report([str(sweep), "--storage", url]) == 0
    out, err = capsys.readouterr()
    assert "| 0 | pruned |" in out and err == ""
    assert {p.name: p.read_bytes() for p in elsewhere.iterdir()} == before  # read in place, nothing added


@pytest.mark.usefixtures("no_connection")
def test_report_never_connects_to_a_database_a_study_yaml_names(tmp_path, capsys):
    write_trial(tmp_path / "0", ["model.net.dropout=0.1"], {"val/f1_weighted": 0.8})
    url = "postgresql://user:secret@db.invalid:5432/studies"
    (tmp_path / "study.yaml").write_text(json.dumps({"study_name": "head", "storage": url}))
    assert sweep_report([str(tmp_path)]) == 0
    (line,) = capsys.readouterr().err.splitlines()
    shown = shlex.quote(url.replace(":secret@", ":***@"))  # the password is never printed
    assert line.startswith("note: ") and line.endswith(f"was not opened; to read it, pass --storage {shown}")


def test_report_on_a_storage_that_cannot_be_read_is_one_line(tmp_path, capsys):
    write_trial(tmp_path / "0", ["model.net.dropout=0.1"], {"val/f1_weighted": 0.8})
    (tmp_path / "optuna.journal").write_text("not a journal\nat all\n")
    (tmp_path / "study.yaml").write_text(json.dumps({"study_name": "head", "storage": "optuna.journal"}))
    assert sweep_report([str(tmp_path)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    reason = "JSONDecodeError: Expecting value: line 1 column 1 (char 0)"
    assert line == f"error: {tmp_path}/study.yaml: cannot read the study ({reason})"
    assert (tmp_path / "optuna.journal").read_text() == "not a journal\nat all\n"
    assert not (tmp_path / "sweep_summary.md").exists()
