"""The HTTP service: real HTTP on a free port, 4xx with a reason for bad requests, batching under concurrency."""

import json
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")

from emotion_lab.inference.predictor import EmotionPredictor  # noqa: E402
from emotion_lab.inference.server import Limits, create_app  # noqa: E402
from emotion_lab.utils.config import PROJECT_ROOT  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(url: str, seconds: float = 60.0, process=None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"server exited: {process.stdout.read()}")
        try:
            if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not come up in {seconds} s")


@pytest.fixture(scope="module")
def server(tiny_model):
    """The app over the tiny model, served by uvicorn in a thread on a free port."""
    predictor = EmotionPredictor.from_pretrained(tiny_model)
    # A generous wait makes concurrent requests meet in one batch on a loaded test machine.
    app = create_app(predictor, Limits(max_chars=1000, max_texts=32, max_wait_ms=100.0), card="tiny card")
    port = free_port()
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    wait_until_up(url)
    yield url
    uv.should_exit = True
    thread.join(timeout=10)


def test_predict_answers_one_text_and_a_list_in_order(server, tiny_model):
    expected = EmotionPredictor.from_pretrained(tiny_model).predict(["i feel happy", "i am scared", "wow"])
    one = httpx.post(f"{server}/predict", json={"text": "i feel happy"})
    assert one.status_code == 200
    [single] = one.json()["predictions"]
    assert single["label"] == expected[0].label
    assert single["probs"] == pytest.approx(expected[0].probs, abs=1e-5)
    many = httpx.post(f"{server}/predict", json={"texts": ["i feel happy", "i am scared", "wow"], "top_words": 2})
    predictions = many.json()["predictions"]
    assert [p["label"] for p in predictions] == [e.label for e in expected]
    assert [p["probs"] for p in predictions] == [pytest.approx(e.probs, abs=1e-5) for e in expected]
    assert all(len(p["top_words"]) == 2 for p in predictions[:2])
    assert set(predictions[0]["probs"]) == {"sadness", "joy", "love", "anger", "fear", "surprise"}


def test_health_and_model_card(server):
    health = httpx.get(f"{server}/health").json()
    assert health["status"] == "ok" and health["rss_mb"] > 0
    card = httpx.get(f"{server}/model").json()
    assert card["labels"] == ["sadness", "joy", "love", "anger", "fear", "surprise"]
    assert card["backend"] == "torch fp32" and card["card"] == "tiny card"
    assert card["limits"]["max_texts"] == 32


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        (b"", 422, "empty body"),
        (b"{not json", 422, "not valid JSON"),
        (json.dumps({"texts": "one string"}).encode(), 422, "texts: Input should be a valid list"),
        (json.dumps({"text": 42}).encode(), 422, "text: Input should be a valid string"),
        (json.dumps({"texts": ["ok", 3]}).encode(), 422, "texts.1: Input should be a valid string"),
        (json.dumps({"text": "a", "texts": ["b"]}).encode(), 422, "exactly one of"),
        (json.dumps({}).encode(), 422, "exactly one of"),
        (json.dumps({"texts": []}).encode(), 422, "empty"),
        (json.dumps({"text": "   "}).encode(), 422, "text 0 is empty"),
        (json.dumps({"text": "x", "colour": 1}).encode(), 422, "colour: Extra inputs are not permitted"),
        (json.dumps({"text": "x", "top_words": -1}).encode(), 422, "top_words"),
        (json.dumps({"text": "x", "top_words": 1000}).encode(), 422, "top_words=1000; allowed 0..20"),
        (json.dumps({"text": "a" * 100_000}).encode(), 413, "text 0 has 100000 characters; the limit is 1000"),
        (json.dumps({"texts": ["hello"] * 10_000}).encode(), 413, "10000 texts in one request; the limit is 32"),
        (b"x" * 3_000_000, 413, "bytes; the limit is"),
    ],
)
def test_bad_requests_get_a_4xx_with_a_reason(server, body, status, reason):
    response = httpx.post(f"{server}/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    assert reason in response.json()["error"]


def test_wrong_method_and_path_are_4xx(server):
    assert httpx.get(f"{server}/predict").status_code == 405
    assert httpx.post(f"{server}/nothing", json={}).status_code == 404


def test_concurrent_requests_are_batched(server):
    before = httpx.get(f"{server}/health").json()
    texts = [f"i feel happy number {i}" for i in range(16)]
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda t: httpx.post(f"{server}/predict", json={"text": t}, timeout=60), texts))
    assert all(a.status_code == 200 for a in answers)
    after = httpx.get(f"{server}/health").json()
    assert after["requests"] - before["requests"] == 16
    # Fewer batches than requests: the model saw batches of more than one request's text.
    assert after["batches"] - before["batches"] < 16
    assert after["max_batch_texts_seen"] > 1


@pytest.mark.slow
def test_serve_command_starts_and_answers(tiny_onnx_model):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "emotion_lab.serve", str(tiny_onnx_model), "--port", str(port), "--threads", "1"],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_up(url, process=process)
        assert httpx.get(f"{url}/model").json()["backend"] == "onnx fp32"  # auto picks the folder's ONNX
        response = httpx.post(f"{url}/predict", json={"texts": ["i feel happy", "i am scared"]})
        assert response.status_code == 200 and len(response.json()["predictions"]) == 2
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_serve_command_refuses_a_missing_model(tmp_path):
    from emotion_lab.serve import main

    assert main([str(tmp_path / "nothing")]) == 2
