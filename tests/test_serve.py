"""`python -m emotion_lab.serve`: starts, answers over HTTP, and refuses bad arguments with one line."""

import os
import subprocess
import sys

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")
pytest.importorskip("onnxruntime")

from emotion_lab.serve import main  # noqa: E402
from emotion_lab.tools.load_test import free_port, wait_for_server  # noqa: E402
from emotion_lab.utils.config import PROJECT_ROOT  # noqa: E402


@pytest.mark.slow
def test_serve_command_starts_and_answers(tiny_onnx_model):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "emotion_lab.serve", str(tiny_onnx_model), "--port", str(port), "--threads", "1"],
        cwd=PROJECT_ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_server(url, process, seconds=120)
        model = httpx.get(f"{url}/model").json()
        assert model["backend"] == "onnx fp32"  # auto picks the folder's ONNX
        assert model["labels"] == ["sadness", "joy", "love", "anger", "fear", "surprise"]
        response = httpx.post(f"{url}/predict", json={"texts": ["i feel happy", "i am scared"]})
        assert response.status_code == 200 and len(response.json()["predictions"]) == 2
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_serve_command_refuses_a_missing_model_and_bad_options(tmp_path, tiny_model, capsys):
    assert main([str(tmp_path / "nothing")]) == 2
    assert "nothing: not an emotion_lab model" in capsys.readouterr().err
    for option in (["--port", "70000"], ["--forward-batch", "0"], ["--max-wait-ms", "-1"]):
        with pytest.raises(SystemExit) as exit_info:
            main([str(tiny_model), *option])
        assert exit_info.value.code == 2
        assert option[0] in capsys.readouterr().err
