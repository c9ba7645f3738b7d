"""`python -m emotion_lab.export` as a command: the folder it writes predicts what the checkpoint predicts."""

import json
import os
import subprocess
import sys

import pytest

from emotion_lab.inference.predictor import EmotionPredictor
from emotion_lab.utils.config import PROJECT_ROOT

TEXTS = ["i feel happy today", "i am so scared of the dark and the noises outside", "wow", "i miss you, love"]


def run_export(*overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "emotion_lab.export", *overrides]
    return subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300)


def probabilities(predictor: EmotionPredictor) -> list[float]:
    """Every text's probability of every label, one flat list."""
    return [p.probs[label] for p in predictor.predict(TEXTS, batch_size=2) for label in predictor.labels]


@pytest.mark.slow
def test_export_writes_a_folder_that_predicts_like_the_checkpoint(trained, tmp_path):
    pytest.importorskip("onnxruntime")
    folder = tmp_path / "models" / "emotion"
    result = run_export(
        f"ckpt_path={trained['ckpt']}", f"out={folder}", "onnx=true", f"hydra.run.dir={tmp_path / 'run'}"
    )
    assert result.returncode == 0, result.stderr[-3000:]

    reference = EmotionPredictor.from_checkpoint(trained["ckpt"])
    expected = probabilities(reference)
    for backend in ("torch", "onnx"):
        loaded = EmotionPredictor.from_pretrained(folder, backend=backend)
        assert loaded.temperature == reference.temperature != 1.0
        assert probabilities(loaded) == pytest.approx(expected, abs=1e-5), backend
    # The card quotes the run's test score (export finds the run's metrics.json beside checkpoints/).
    run_metrics = json.loads((trained["out"] / "metrics.json").read_text())
    assert f"{run_metrics['test/f1_weighted']:.4f}" in (folder / "README.md").read_text()


@pytest.mark.slow
def test_export_refuses_an_out_that_is_a_file_and_leaves_it_alone(trained, tmp_path):
    out = tmp_path / "notes.txt"
    out.write_text("keep me\n")
    result = run_export(f"ckpt_path={trained['ckpt']}", f"out={out}", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2
    output = result.stdout + result.stderr  # Hydra's log goes to stdout
    assert output.count(f"out={out}: a file, not a folder") == 1 and "Traceback" not in output
    assert out.read_text() == "keep me\n"
