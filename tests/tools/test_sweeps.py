"""Sweeps: Optuna and grid configs, failed trials, the summary table, joblib and DDP."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from emotion_lab.tools.sweep_report import main as sweep_report
from emotion_lab.utils.config import PROJECT_ROOT
from tests.conftest import QUIET


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
            "hydra.sweeper.n_trials=4",
            "model.net.attn_heads=choice(2,3)",
            "model.net.lstm_hidden=choice(8)",
            *tiny(tmp_path, data_dir, tiny_encoder),
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    folder = multirun_dir(tmp_path)
    assert (folder / "optimization_results.yaml").is_file()
    assert sweep_report([str(folder)]) == 0
    rows = list(csv.DictReader((folder / "sweep_summary.csv").open()))
    assert len(rows) == 4
    failed = [r for r in rows if r["status"] != "ok"]
    assert failed and all("attn_heads=3 must divide" in r["status"] for r in failed)
    assert len(failed) < 4 and rows[0]["status"] == "ok"  # the sweep went on; best trial first


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
