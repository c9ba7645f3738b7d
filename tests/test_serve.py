"""`python -m emotion_lab.serve`: starts, answers over HTTP, and refuses bad arguments with one line."""

import asyncio
import os
import subprocess
import sys

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")
pytest.importorskip("onnxruntime")

from emotion_lab.serve import build_parser, main  # noqa: E402
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


def test_serve_command_refuses_a_missing_model_and_bad_options(tmp_path, tiny_model, capsys, monkeypatch):
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("a bad option started the server"))
    assert main([str(tmp_path / "nothing")]) == 2
    assert "nothing: not an emotion_lab model" in capsys.readouterr().err
    bad = [["--port", "70000"], ["--forward-batch", "0"], ["--max-wait-ms", "-1"], ["--limit-concurrency", "0"]]
    bad += [
        ["--body-timeout", "0"],
        ["--header-timeout", "-1"],
        ["--timeout-keep-alive", "0"],
        ["--allowed-host", "*x*"],
        ["--allowed-host", "myhost:8000"],
        ["--allowed-host", "[::1]:8000"],
    ]
    for option in bad:
        with pytest.raises(SystemExit) as exit_info:
            main([str(tiny_model), *option])
        assert exit_info.value.code == 2
        assert option[0] in capsys.readouterr().err


def test_help_states_the_serving_limits():
    text = " ".join(build_parser().format_help().split())
    for option, default in [("--header-timeout", 10), ("--body-timeout", 10), ("--timeout-keep-alive", 5)]:
        assert f"{option} {option.upper().lstrip('-').replace('-', '_')}" in text and f"(default {default})" in text
    assert "beyond it, 503 (default 512)" in text and "others get 400" in text


async def _get(app, host: str) -> int:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
        return (await client.get("/model", headers={"host": host})).status_code


def test_serve_hands_its_limits_to_uvicorn_and_the_app(tiny_model, monkeypatch):
    import uvicorn

    ran = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: ran.update(kwargs, app=app))
    options = ["--allowed-host", "Model.Internal", "--allowed-host", "::2", "--timeout-keep-alive", "7"]
    options += ["--limit-concurrency", "9", "--header-timeout", "3", "--body-timeout", "4", "--threads", "1"]
    assert main([str(tiny_model), *options]) == 0
    assert (ran["timeout_keep_alive"], ran["limit_concurrency"], ran["http"].deadline_s) == (7, 9, 3.0)
    app = ran["app"]
    assert app.state.batcher.limits.body_timeout_s == 4.0
    statuses = {host: asyncio.run(_get(app, host)) for host in ["model.internal:80", "[::2]:8000", "localhost", "a.b"]}
    assert statuses == {"model.internal:80": 200, "[::2]:8000": 200, "localhost": 200, "a.b": 400}
