"""Files written by the code of commit 00a3f3b still load, and still give the same probabilities.

tests/fixtures/compat_00a3f3b holds a model folder and a Lightning checkpoint that training at that
commit wrote (make_fixture.py there says how), with that commit's probabilities and evaluation
metrics in expected.json. They are read only through the entry points users call, so moving
modules behind them must keep these passing. The checkpoint names its encoder `tiny_encoder`, a
folder beside it: each test runs in a copy of the fixture, which also keeps tests/fixtures unwritten.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from emotion_lab.inference.predictor import EmotionPredictor

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "compat_00a3f3b"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())
SOURCES = {"model": "model", "ckpt": "tiny.ckpt"}  # expected.json key -> file in the fixture


@pytest.fixture
def old_files(tmp_path, monkeypatch) -> Path:
    copy = shutil.copytree(FIXTURE, tmp_path / "compat", ignore=shutil.ignore_patterns("make_fixture.py"))
    monkeypatch.chdir(copy)
    return copy


def run(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    # Run outside the checkout (the encoder name resolves in the fixture copy), still on its code.
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": path}
    command = [sys.executable, "-m", module, *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def assert_old_probabilities(got: list[dict[str, float]], key: str) -> None:
    expected = EXPECTED[key]
    assert len(got) == len(expected) == len(EXPECTED["sentences"])
    for sentence, probs, old in zip(EXPECTED["sentences"], got, expected):
        assert set(probs) == set(old), sentence
        for label in old:
            assert probs[label] == pytest.approx(old[label], abs=1e-5), (sentence, label)


@pytest.mark.parametrize("key", SOURCES)
def test_from_pretrained_gives_the_old_probabilities(old_files, key):
    predictor = EmotionPredictor.from_pretrained(old_files / SOURCES[key])
    assert_old_probabilities([p.probs for p in predictor.predict(EXPECTED["sentences"])], key)


@pytest.mark.slow
@pytest.mark.parametrize("key", SOURCES)
def test_predict_command_gives_the_old_probabilities(old_files, key):
    (old_files / "in.txt").write_text("\n".join(EXPECTED["sentences"]) + "\n")
    result = run("emotion_lab.predict", SOURCES[key], "--input", "in.txt", "--output", "out.jsonl", cwd=old_files)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    rows = [json.loads(line) for line in (old_files / "out.jsonl").read_text().splitlines()]
    assert [row["text"] for row in rows] == EXPECTED["sentences"]
    assert_old_probabilities([row["probs"] for row in rows], key)


@pytest.mark.slow
def test_evaluate_command_gives_the_old_metrics(old_files):
    result = run(
        "emotion_lab.evaluate",
        "ckpt_path=tiny.ckpt",
        "data.dir=data",
        f"hydra.run.dir={old_files / 'eval'}",
        "trainer.enable_progress_bar=false",
        cwd=old_files,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    metrics = json.loads((old_files / "eval" / "metrics.json").read_text())
    for name, old in EXPECTED["evaluate"].items():
        assert metrics[name] == pytest.approx(old, abs=1e-5), name
