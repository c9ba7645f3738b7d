"""`python -m emotion_lab.evaluate` as a command: what it writes agrees with itself and with the training run."""

import json
import os
import subprocess
import sys

import pytest

from emotion_lab.labels import LABELS
from emotion_lab.utils.config import PROJECT_ROOT


def run_evaluate(*overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "emotion_lab.evaluate", "trainer.enable_progress_bar=false", *overrides]
    return subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_evaluate_writes_metrics_that_match_its_report_and_the_training_run(trained, data_dir, tmp_path):
    # The run read text through its spelling step: evaluation must read the misspelt split through the
    # checkpoint's dictionary (this training split no longer has "happy") and score as the run did.
    typos = tmp_path / "data"
    typos.mkdir()
    for name, (word, written) in {"train.txt": ("happy", "glad"), "val.txt": ("happy", "hapy"),
                                  "test.txt": ("happy", "hapy")}.items():  # fmt: skip
        (typos / name).write_text((data_dir / name).read_text().replace(word, written))
    assert "hapy" in (typos / "test.txt").read_text()
    out = tmp_path / "eval"
    result = run_evaluate(f"ckpt_path={trained['ckpt']}", f"data.dir={typos}", f"hydra.run.dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["ckpt_path"] == str(trained["ckpt"])
    # The same checkpoint on the same test split: the training run's test, again.
    for key in ("test/f1_weighted", "test/f1_macro", "test/acc", "test/nll", "test/ece_calibrated"):
        assert metrics[key] == pytest.approx(trained["metrics"][key], abs=1e-6), key
    assert metrics["val/temperature"] == pytest.approx(trained["metrics"]["val/temperature"], abs=1e-6)

    # test_report.json comes from scikit-learn over the collected predictions, metrics.json from the
    # module's torchmetrics: two computations that must agree.
    report = json.loads((out / "test_report.json").read_text())
    assert metrics["test/f1_weighted"] == pytest.approx(report["weighted avg"]["f1-score"], abs=1e-6)
    assert metrics["test/f1_macro"] == pytest.approx(report["macro avg"]["f1-score"], abs=1e-6)
    assert metrics["test/acc"] == pytest.approx(report["accuracy"], abs=1e-6)
    for label in LABELS:
        assert metrics[f"test_f1/{label}"] == pytest.approx(report[label]["f1-score"], abs=1e-6), label
        assert metrics[f"test_recall/{label}"] == pytest.approx(report[label]["recall"], abs=1e-6), label
    assert sum(report[label]["support"] for label in LABELS) == 24  # the whole test split
    assert report["calibration"]["ece_calibrated"] == pytest.approx(metrics["test/ece_calibrated"], abs=1e-6)
    assert report["calibration"]["temperature"] == pytest.approx(metrics["val/temperature"], abs=1e-6)
    assert "weighted avg" in (out / "test_report.txt").read_text()
    for name in ("f1_by_class", "precision_recall_f1", "confusion_matrix", "reliability"):
        assert (out / "figures" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


@pytest.mark.slow
def test_a_missing_checkpoint_is_one_line_and_exit_status_2(tmp_path):
    result = run_evaluate(f"ckpt_path={tmp_path / 'missing.ckpt'}", f"hydra.run.dir={tmp_path / 'eval'}")
    assert result.returncode == 2
    output = result.stdout + result.stderr  # Hydra's log goes to stdout
    assert output.count("no such checkpoint file") == 1 and "Traceback" not in output
    assert not (tmp_path / "eval" / "metrics.json").exists()
