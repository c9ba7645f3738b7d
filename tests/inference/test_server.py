"""The HTTP service: real HTTP on a free port, 4xx with a reason for bad requests, batching under concurrency."""

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pytest

httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")
pytest.importorskip("aiohttp")

from emotion_lab.data.labels import LABELS  # noqa: E402
from emotion_lab.inference.batching import Limits  # noqa: E402
from emotion_lab.inference.predictor import EmotionPredictor, Prediction  # noqa: E402
from emotion_lab.inference.server import create_app  # noqa: E402
from emotion_lab.tools.load_test import free_port, wait_for_server  # noqa: E402


@contextmanager
def serving(predictor, limits: Limits, card: str = ""):
    """The app over `predictor`, served by uvicorn in a thread on a free port: real HTTP. Yields (url, app)."""
    port, app = free_port(), create_app(predictor, limits, card=card)
    uv = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    wait_for_server(url, seconds=60)
    try:
        yield url, app
    finally:
        uv.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def server(tiny_model):
    # A generous wait makes concurrent requests meet in one batch on a loaded test machine.
    limits = Limits(max_chars=1000, max_texts=32, max_wait_ms=100.0)
    with serving(EmotionPredictor.from_pretrained(tiny_model), limits, card="tiny card") as (url, _):
        yield url


class SlowPredictor:
    """Takes `delay` seconds over a batch holding a text that starts with "slow"; a text containing
    "boom" makes its whole batch fail."""

    labels, max_length, net_config, temperature = LABELS, 64, {}, 1.0

    class backend:
        name = "fake"

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay

    def predict(self, texts, batch_size=64, top_words=0):
        if any(text.startswith("slow") for text in texts):
            time.sleep(self.delay)
        if any("boom" in text for text in texts):
            raise RuntimeError("the model broke")
        return [Prediction("joy", dict.fromkeys(LABELS, 1 / 6)) for _ in texts]


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
        (b'{"text": "caf\xe9"}', 400, "There was an error parsing the body"),  # Latin-1 bytes, not UTF-8
        (json.dumps({"texts": "one string"}).encode(), 422, "texts: Input should be a valid list"),
        (json.dumps({"text": 42}).encode(), 422, "text: Input should be a valid string"),
        (json.dumps({"texts": ["ok", 3]}).encode(), 422, "texts.1: Input should be a valid string"),
        (json.dumps({"text": "a", "texts": ["b"]}).encode(), 422, "exactly one of"),
        (json.dumps({}).encode(), 422, "exactly one of"),
        (json.dumps({"texts": []}).encode(), 422, "empty"),
        (json.dumps({"text": "   "}).encode(), 422, "text 0 is empty"),
        (json.dumps({"text": "x", "colour": 1}).encode(), 422, "colour: Extra inputs are not permitted"),
        (json.dumps({"text": "x", "top_words": -1}).encode(), 422, "top_words=-1; allowed 0..20"),
        (b'{"text": "hi \\ud800 there"}', 422, "text 0 is not valid Unicode"),
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


def test_wrong_method_and_path_are_4xx_with_a_reason(server):
    wrong_method, no_path = httpx.get(f"{server}/predict"), httpx.post(f"{server}/nothing", json={})
    assert (wrong_method.status_code, wrong_method.json()) == (405, {"error": "Method Not Allowed"})
    assert (no_path.status_code, no_path.json()) == (404, {"error": "Not Found"})


def test_a_body_without_content_length_is_refused(server):
    chunks = iter([b'{"text": ', b'"i feel happy"}'])  # a generator body goes out chunked
    response = httpx.post(f"{server}/predict", content=chunks, headers={"content-type": "application/json"})
    assert response.status_code == 411 and "Content-Length" in response.json()["error"]


def test_concurrent_requests_are_batched(server):
    before = httpx.get(f"{server}/health").json()
    texts = [f"i feel happy number {i}" for i in range(16)]
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda t: httpx.post(f"{server}/predict", json={"text": t}, timeout=60), texts))
    assert all(a.status_code == 200 for a in answers)
    after = httpx.get(f"{server}/health").json()
    assert after["requests"] - before["requests"] == 16
    assert after["batched_texts"] - before["batched_texts"] == 16
    # Fewer batches than requests: the model saw batches of more than one request's text.
    assert after["batches"] - before["batches"] < 16


def test_a_failing_request_fails_alone_and_the_server_lives_on():
    with serving(SlowPredictor(delay=1.5), Limits(max_wait_ms=50.0)) as (url, _):
        before = httpx.get(f"{url}/health").json()
        with ThreadPoolExecutor(5) as pool:
            busy = pool.submit(httpx.post, f"{url}/predict", json={"text": "slow: keeps the worker busy"}, timeout=30)
            time.sleep(0.3)  # the four below queue up while the first batch runs, then run as one batch
            texts = ["fine", "boom", "also fine", "fine again"]
            answers = list(pool.map(lambda t: httpx.post(f"{url}/predict", json={"text": t}, timeout=30), texts))
        assert busy.result().status_code == 200
        assert [a.status_code for a in answers] == [200, 500, 200, 200]
        assert answers[1].json()["error"] == "prediction failed: RuntimeError: the model broke"
        health = httpx.get(f"{url}/health")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert health.json()["batches"] - before["batches"] == 2  # the four shared one batch, then were retried
        assert httpx.post(f"{url}/predict", json={"text": "still here"}).status_code == 200


def test_a_stopped_worker_answers_503_not_a_hang():
    with serving(SlowPredictor(), Limits()) as (url, app):
        worker = app.state.batcher._worker
        worker.get_loop().call_soon_threadsafe(worker.cancel)  # as if the worker had died
        time.sleep(0.2)
        health = httpx.get(f"{url}/health")
        assert health.status_code == 503 and health.json()["status"] == "prediction worker stopped"
        answer = httpx.post(f"{url}/predict", json={"text": "hello"}, timeout=10)
        assert answer.status_code == 503 and "not running" in answer.json()["error"]


def test_a_full_queue_answers_503_with_retry_after():
    with serving(SlowPredictor(delay=0.5), Limits(max_queued_texts=2, max_wait_ms=0.0)) as (url, _):
        with ThreadPoolExecutor(6) as pool:
            answers = list(
                pool.map(lambda i: httpx.post(f"{url}/predict", json={"text": f"slow {i}"}, timeout=30), range(6))
            )
        busy = [a for a in answers if a.status_code == 503]
        assert busy and all(a.status_code in (200, 503) for a in answers)
        assert busy[0].headers["retry-after"] == "1" and "server busy" in busy[0].json()["error"]
