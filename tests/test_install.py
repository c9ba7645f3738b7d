"""`pip install .`, not editable: the console scripts run from any folder, with the configs from the wheel,
their outputs under the working directory, and one line for what only a checkout holds."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from emotion_lab.tools import bench, results_page
from emotion_lab.utils import config
from emotion_lab.utils.config import CHECKOUT
from tests.conftest import QUIET, tiny_overrides

TEACHER_LOGITS = "docs/results/teachers/2026-11-27_cf57bff/teacher_logits.safetensors"  # experiment=distilled_cpu's


def run(command: list, cwd: Path, timeout: int = 180) -> subprocess.CompletedProcess:
    # No PYTHONPATH: the venv must find the installed copy, never the sources.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"HF_HUB_OFFLINE": "1"}
    return subprocess.run([str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A venv holding emotion_lab installed from its wheel; torch and the rest come from the running interpreter."""
    if CHECKOUT is None:
        pytest.skip("builds the package from a checkout's sources")
    root = tmp_path_factory.mktemp("install")
    source = root / "source"  # a copy: building leaves build/ and *.egg-info beside the sources
    for name in ("emotion_lab", "hydra_plugins"):
        shutil.copytree(CHECKOUT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(CHECKOUT / name, source / name)
    # One machine's settings must stay out of the wheel.
    (source / "emotion_lab/conf/local/default.yaml").write_text("# @package _global_\nseed: 99\n")

    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv], check=True)
    python = venv / "bin/python"
    site = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], root).stdout.strip())
    # The running interpreter's packages, after the venv's own: as plain path lines, so that no .pth file there
    # runs (the editable install's finder, which would import the sources, is one).
    ours = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
    (site / "zz_running_interpreter.pth").write_text("\n".join(ours) + "\n")
    pip = [python, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index"]
    result = run([*pip, "--no-cache-dir", "--quiet", "--disable-pip-version-check", source], root)
    assert result.returncode == 0, result.stderr[-3000:]

    where = run([python, "-c", "import emotion_lab.utils.config as c; print(c.__file__, c.CHECKOUT)"], root)
    module, checkout = where.stdout.split()
    assert Path(module).is_relative_to(site) and checkout == "None", where.stdout + where.stderr
    assert (site / "emotion_lab/conf/train.yaml").is_file() and (site / "hydra_plugins/emotion_lab_sweeper").is_dir()
    assert not (site / "emotion_lab/conf/local").exists()
    assert (site / "emotion_lab/robustness/templates.tsv").is_file()  # the behaviour suite's sentences
    for name in ("index.html", "page.js", "page.css"):  # the server's page
        assert (site / "emotion_lab/inference/page" / name).is_file()
    return venv


@pytest.mark.slow
def test_console_scripts_run_installed_from_any_folder(venv, tmp_path, tiny_encoder, data_dir):
    overrides = [*tiny_overrides(tiny_encoder, data_dir), "data.limit_per_split=16", "trainer.max_epochs=1", *QUIET]
    result = run([venv / "bin/emotion-train", *overrides, "trainer.num_sanity_val_steps=0", "export=false"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_folder,) = (tmp_path / "outputs" / "train" / "runs").iterdir()  # root_dir: the working directory
    assert json.loads((run_folder / "metrics.json").read_text())["status"] == "ok"

    for script in ("emotion-predict", "emotion-behaviour"):
        result = run([venv / f"bin/{script}", "--help"], tmp_path)
        assert result.returncode == 0 and "usage:" in result.stdout, result.stderr[-3000:]


@pytest.mark.slow
def test_committed_files_need_a_checkout_and_local_config_comes_from_the_working_directory(
    venv, tmp_path, tiny_encoder, data_dir
):
    overrides = ["experiment=distilled_cpu", *tiny_overrides(tiny_encoder, data_dir), "data.limit_per_split=16"]
    result = run([venv / "bin/emotion-train", *overrides, *QUIET], tmp_path)
    output = result.stdout + result.stderr  # Hydra's log goes to stdout
    assert result.returncode == 2, output[-3000:]
    (line,) = [line for line in output.splitlines() if "needs a checkout" in line]
    assert TEACHER_LOGITS in line and "Traceback" not in output

    (tmp_path / "conf/local").mkdir(parents=True)
    (tmp_path / "conf/local/default.yaml").write_text("# @package _global_\nseed: 7\n")
    result = run([venv / "bin/emotion-train", "--cfg", "job"], tmp_path)
    assert "\nseed: 7\n" in result.stdout, result.stderr[-3000:]
    result = run([venv / "bin/emotion-evaluate", "--cfg", "job", "ckpt_path=x.ckpt"], tmp_path)
    assert "\nseed: 7\n" in result.stdout, result.stderr[-3000:]


def test_where_root_and_user_configs_are_installed_and_in_a_checkout(monkeypatch, tmp_path, capsys, caplog):
    assert config.PROJECT_ROOT == CHECKOUT and config.user_config_dirs() == []
    (tmp_path / "conf").mkdir()
    monkeypatch.setattr(config, "PROJECT_ROOT", tmp_path)
    assert config.user_config_dirs() == []  # a checkout keeps emotion_lab/conf/local
    assert config.needs_checkout(tmp_path / TEACHER_LOGITS) is None

    monkeypatch.setattr(config, "CHECKOUT", None)
    assert config.user_config_dirs() == [f"file://{tmp_path / 'conf'}"]
    assert TEACHER_LOGITS in config.needs_checkout(tmp_path / TEACHER_LOGITS)
    assert config.needs_checkout(tmp_path / "outputs/elsewhere.safetensors") is None  # not committed: its own error
    with pytest.raises(config.CheckoutRequiredError, match="docs/results"):
        config.require_checkout("docs/results")
    assert results_page.main([]) == 2 and "docs/results not found" in capsys.readouterr().err
    with caplog.at_level(logging.ERROR):  # before any training
        assert bench.main(["--publish", "--out", str(tmp_path / "bench")]) == 2
    assert "needs a checkout" in caplog.text and not (tmp_path / "bench").exists()
    (tmp_path / "docs/results").mkdir(parents=True)  # run from a clone's root: its files are there
    assert config.require_checkout("docs/results") == tmp_path / "docs/results"
