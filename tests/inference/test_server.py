"""The HTTP service: real HTTP on a free port, 4xx with a reason for bad requests, batching under concurrency."""

import asyncio
import json
import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")
pytest.importorskip("aiohttp")

from emotion_lab.inference.batching import Limits  # noqa: E402
from emotion_lab.inference.explain_worker import ExplainWorker  # noqa: E402
from emotion_lab.inference.guards import CONTENT_SECURITY_POLICY  # noqa: E402
from emotion_lab.inference.header_deadline import header_deadline_protocol  # noqa: E402
from emotion_lab.inference.predictor import EmotionPredictor, Prediction  # noqa: E402
from emotion_lab.inference.server import create_app, public_config, without_paths  # noqa: E402
from emotion_lab.labels import LABELS  # noqa: E402
from emotion_lab.tools.load_test import free_port, wait_for_server  # noqa: E402


@contextmanager
def serving(predictor, limits: Limits, card: str = "", header_timeout: float | None = None, explainer=None, **config):
    """The app over `predictor`, served by uvicorn in a thread on a free port: real HTTP. Yields (url, app)."""
    port, app = free_port(), create_app(predictor, limits, card=card, explainer=explainer)
    http = header_deadline_protocol(header_timeout) if header_timeout else "auto"
    uv = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning", http=http, **config))
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

    labels, max_length, net_config, temperature, spelling = LABELS, 64, {}, 1.0, None

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


def test_a_model_with_a_spelling_step_says_what_it_read(trained):
    with serving(EmotionPredictor.from_pretrained(trained["model"]), Limits()) as (url, _):
        answer = httpx.post(f"{url}/predict", json={"texts": ["i feel hapy", "i feel happy"]})
        typo, plain = answer.json()["predictions"]
        assert typo["read_as"] == "i feel happy" and "read_as" not in plain
        assert typo["probs"] == pytest.approx(plain["probs"], abs=1e-6)
        assert httpx.get(f"{url}/model").json()["spelling_words"] > 0


def test_health_and_model_card(server):
    health = httpx.get(f"{server}/health").json()
    assert health["status"] == "ok" and health["rss_mb"] > 0 and health["backend"] == "torch fp32"
    card = httpx.get(f"{server}/model").json()
    assert card["labels"] == ["sadness", "joy", "love", "anger", "fear", "surprise"]
    assert card["backend"] == "torch fp32" and card["card"] == "tiny card"
    assert card["limits"]["max_texts"] == 32
    assert card["explain"] is None and card["files"]["extensions"] == [".txt", ".csv", ".jsonl", ".ndjson"]
    assert card["spelling_words"] == 0


def test_the_page_and_its_files_are_served_with_a_policy_that_allows_only_their_own_code(server):
    page = httpx.get(f"{server}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script src="/static/page.js"' in page.text and "<script>" not in page.text
    assert httpx.get(f"{server}/static/page.js").headers["content-type"].startswith("text/javascript")
    assert httpx.get(f"{server}/static/page.css").headers["content-type"].startswith("text/css")
    for path in ("/static/..%2Fserver.py", "/static/index.html", "/static/%2E%2E/batching.py"):
        assert httpx.get(f"{server}{path}").status_code == 404
    # Every answer carries the policy, errors and JSON included.
    answers = [page, httpx.get(f"{server}/nothing"), httpx.post(f"{server}/predict", json={"text": ""})]
    for answer in answers:
        assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert answer.headers["x-content-type-options"] == "nosniff"
    assert "script-src 'self'" in CONTENT_SECURITY_POLICY and "unsafe-inline" not in CONTENT_SECURITY_POLICY


def test_a_file_is_answered_as_rows_and_a_csv_with_the_same_limits(server, tiny_model):
    content = "text\ni feel happy\n=1+2\ni am scared\n"
    answer = httpx.post(f"{server}/predict/file", json={"filename": "notes.csv", "content": content})
    assert answer.status_code == 200, answer.text
    rows = answer.json()["rows"]
    expected = EmotionPredictor.from_pretrained(tiny_model).predict(["i feel happy", "=1+2", "i am scared"])
    assert [r["text"] for r in rows] == ["i feel happy", "=1+2", "i am scared"]
    assert [r["label"] for r in rows] == [e.label for e in expected]
    lines = answer.json()["csv"].splitlines()
    assert len(lines) == 4 and lines[2].startswith("'=1+2,")
    for body, status, error in [
        ({"filename": "notes.jsonl", "content": '{"text": "ok"}\nnope\n'}, 422, "notes.jsonl:2: not valid JSON"),
        ({"filename": "notes.exe", "content": "x"}, 422, "notes.exe: not a .txt"),
        ({"filename": "a.txt", "content": "hi\n" * 33}, 413, "33 texts in one request; the limit is 32"),
        ({"filename": "a.txt", "content": "hi\n" + "a" * 1001}, 413, "a.txt: text 2 has 1001 characters"),
        ({"filename": "a.txt"}, 422, "content: Field required"),
        ({"filename": "a.jsonl", "content": "[" * 100_000}, 422, "a.jsonl:1: not valid JSON here"),
        ('{"filename": "\\ud800.exe", "content": "x"}', 422, "\\ud800.exe: not a .txt"),  # a lone surrogate
    ]:
        sent = (
            {"content": body, "headers": {"content-type": "application/json"}}
            if isinstance(body, str)
            else {"json": body}
        )
        answer = httpx.post(f"{server}/predict/file", **sent)
        assert (answer.status_code, answer.json()["error"][: len(error)]) == (status, error)


def test_explanations_come_from_their_own_worker_and_match_the_predictor(tiny_model):
    limits = Limits(max_chars=1000, max_texts=32, max_explain_texts=2)
    steps = 1000  # slow enough that a prediction can be seen answered while an explanation runs
    worker = ExplainWorker(tiny_model, limits, steps=steps)
    with serving(EmotionPredictor.from_pretrained(tiny_model), limits, explainer=worker) as (url, _):
        assert httpx.get(f"{url}/model").json()["explain"] == {"method": "integrated gradients", "max_texts": 2}
        texts = ["i feel so happy today", "this is terrifying"]
        answer = httpx.post(f"{url}/predict", json={"texts": texts, "explain": True}, timeout=120)
        assert answer.status_code == 200, answer.text
        expected = EmotionPredictor.from_pretrained(tiny_model).explain(texts, steps=steps)
        for prediction, want in zip(answer.json()["predictions"], expected):
            got = prediction["explanation"]
            assert got["label"] == want.label == prediction["label"]
            assert [w["text"] for w in got["words"]] == [w.text for w in want.words]
            assert [w["score"] for w in got["words"]] == pytest.approx([w.score for w in want.words], abs=1e-5)
        plain = httpx.post(f"{url}/predict", json={"text": "i feel fine"}).json()["predictions"][0]
        assert "explanation" not in plain
        too_many = httpx.post(f"{url}/predict", json={"texts": ["a", "b", "c"], "explain": True})
        assert too_many.status_code == 413 and "3 texts to explain" in too_many.json()["error"]
        assert httpx.get(f"{url}/health").json()["explanations"]["explained_texts"] == 2
        # A prediction is answered while an explanation runs: it never queues behind one.
        body = {"texts": texts, "explain": True}
        with ThreadPoolExecutor(1) as pool:
            explaining = pool.submit(httpx.post, f"{url}/predict", json=body, timeout=120)
            for _ in range(600):  # bounded
                if httpx.get(f"{url}/health").json()["explanations"]["pending"] == 1:
                    break
                time.sleep(0.01)
            assert httpx.post(f"{url}/predict", json={"text": "i feel fine"}).status_code == 200
            assert httpx.get(f"{url}/health").json()["explanations"]["pending"] == 1  # still explaining
            assert explaining.result().status_code == 200


def test_a_server_without_explanations_says_so(server):
    answer = httpx.post(f"{server}/predict", json={"text": "i feel fine", "explain": True})
    assert answer.status_code == 422 and "gives no explanations" in answer.json()["error"]


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


def test_a_failing_request_fails_alone_and_the_server_lives_on(caplog):
    with serving(SlowPredictor(delay=1.5), Limits(max_wait_ms=50.0)) as (url, _), caplog.at_level(logging.ERROR):
        before = httpx.get(f"{url}/health").json()
        with ThreadPoolExecutor(5) as pool:
            busy = pool.submit(httpx.post, f"{url}/predict", json={"text": "slow: keeps the worker busy"}, timeout=30)
            time.sleep(0.3)  # the four below queue up while the first batch runs, then run as one batch
            texts = ["fine", "boom", "also fine", "fine again"]
            answers = list(pool.map(lambda t: httpx.post(f"{url}/predict", json={"text": t}, timeout=30), texts))
        assert busy.result().status_code == 200
        assert [a.status_code for a in answers] == [200, 500, 200, 200]
        # The client gets an id, never the exception's text; the log line has both.
        request_id = answers[1].headers["x-request-id"]
        assert answers[1].json() == {"error": f"internal error; the server log has it under request id {request_id}"}
        assert "the model broke" not in answers[1].text
        [logged] = [r for r in caplog.records if request_id in r.getMessage()]
        assert "the model broke" in str(logged.exc_info[1]) and "POST /predict" in logged.getMessage()
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


def test_an_explanation_that_asking_again_cannot_help_is_503_without_retry_after(tiny_model):
    from emotion_lab.inference.batching import RequestError

    class Unloadable:  # what ExplainWorker answers once its model failed to load
        def start(self) -> None: ...

        def stop(self) -> None: ...

        def stats(self) -> dict:
            return {"ready": False}

        async def explain(self, texts):
            raise RequestError(503, "explanations unavailable: could not load the model", may_retry=False)

    with serving(EmotionPredictor.from_pretrained(tiny_model), Limits(), explainer=Unloadable()) as (url, _):
        answer = httpx.post(f"{url}/predict", json={"text": "i feel fine", "explain": True}, timeout=30)
        assert answer.status_code == 503 and "retry-after" not in answer.headers
        assert answer.json()["error"].startswith("explanations unavailable")
        assert httpx.post(f"{url}/predict", json={"text": "i feel fine"}, timeout=30).status_code == 200


def test_requests_queued_when_the_worker_stops_are_answered_503():
    with serving(SlowPredictor(delay=1.5), Limits(max_wait_ms=0.0)) as (url, app):
        with ThreadPoolExecutor(4) as pool:
            running = pool.submit(httpx.post, f"{url}/predict", json={"text": "slow: in the model"}, timeout=10)
            time.sleep(0.3)
            queued = [
                pool.submit(httpx.post, f"{url}/predict", json={"text": f"queued {i}"}, timeout=10) for i in range(3)
            ]
            for _ in range(100):  # until all three wait in the queue behind the running batch
                if httpx.get(f"{url}/health").json()["queued_texts"] == 3:
                    break
                time.sleep(0.05)
            worker = app.state.batcher._worker
            worker.get_loop().call_soon_threadsafe(worker.cancel)  # as if the worker had died
            answers = [running.result(), *(q.result() for q in queued)]
        assert [a.status_code for a in answers] == [503] * 4
        assert [a.json()["error"] for a in answers] == ["the prediction worker stopped; see the server log"] * 4


async def _asgi_get(app, path: str, host: str):
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        return await client.get(path, headers={"host": host})


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.1:8000", "localhost:1", "LOCALHOST", "[::1]:8000"])
def test_the_loopback_names_are_answered(host):
    assert asyncio.run(_asgi_get(create_app(SlowPredictor()), "/model", host)).status_code == 200


@pytest.mark.parametrize("host", ["evil.example", "127.0.0.1.evil.example", "10.0.0.1:8000", "localhost.evil", ""])
def test_other_host_headers_get_400(host):
    answer = asyncio.run(_asgi_get(create_app(SlowPredictor()), "/model", host))
    assert answer.status_code == 400 and "x-request-id" in answer.headers


def test_allowed_hosts_widen_the_loopback_names():
    app = create_app(SlowPredictor(), allowed_hosts=["127.0.0.1", "model.internal"])
    assert asyncio.run(_asgi_get(app, "/model", "model.internal:8000")).status_code == 200
    assert asyncio.run(_asgi_get(app, "/model", "localhost")).status_code == 400


def test_model_answers_without_absolute_paths(tiny_model):
    card = (
        "# model\n- backbone: `google/bert_uncased_L-4_H-256_A-4`\n"
        "- exported from: `outputs/train/runs/2026-12-01_10-00-00/checkpoints/epoch_3.ckpt`\n"
        "see /home/someone/private/notes.md or C:\\Users\\someone\\model.ckpt, https://example.com/a/b\n"
    )
    predictor = EmotionPredictor.from_pretrained(tiny_model)
    answer = asyncio.run(_asgi_get(create_app(predictor, card=card), "/model", "127.0.0.1"))
    body = answer.json()
    assert str(tiny_model) not in answer.text and "/home/" not in answer.text and "Users" not in answer.text
    assert body["net"]["encoder_name"] == "encoder"  # the model folder's encoder folder, by name
    assert "- exported from: `epoch_3.ckpt`" in body["card"]
    assert "see notes.md or model.ckpt, https://example.com/a/b" in body["card"]
    assert "`google/bert_uncased_L-4_H-256_A-4`" in body["card"]


def test_public_config_keeps_hub_ids_and_names_local_folders():
    net = {"encoder_name": "google/bert_uncased_L-4_H-256_A-4", "lstm_hidden": 16, "_target_": "emotion_lab.x.Net"}
    assert public_config(net) == net
    for local in ("/srv/models/enc", "./enc", "~/enc", "a/b/enc", "C:\\models\\enc"):
        assert public_config({"encoder_name": local}) == {"encoder_name": "enc"}
    assert without_paths("softmax(logits / T), 1/2") == "softmax(logits / T), 1/2"


def _raw(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock


def _read_until_closed(sock: socket.socket, seconds: float) -> tuple[bytes, float]:
    """What the server sent until it closed the connection, and when it closed it (or `seconds`)."""
    start, data = time.monotonic(), b""
    sock.settimeout(0.2)
    while time.monotonic() - start < seconds:
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            continue
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data, time.monotonic() - start


POST = b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"


def test_a_body_declared_and_never_sent_gets_408_and_the_connection_closed():
    with serving(SlowPredictor(), Limits(body_timeout_s=1.0)) as (url, _):
        never = _raw(url)
        never.sendall(POST + b"Content-Length: 100\r\n\r\n")
        trickled = _raw(url)
        trickled.sendall(POST + b"Content-Length: 100\r\n\r\n")
        for _ in range(3):  # a byte every 0.4 s: the deadline is for the whole body, not each read
            time.sleep(0.4)
            trickled.sendall(b" ")
        answer = httpx.post(f"{url}/predict", json={"text": "meanwhile"}, timeout=5)
        assert answer.status_code == 200
        for sock in (never, trickled):
            data, took = _read_until_closed(sock, 10)
            assert data.startswith(b"HTTP/1.1 408") and b"did not arrive within 1 s" in data
            assert took < 5  # closed after the answer, not held
            sock.close()


def test_headers_never_finished_and_idle_connections_are_closed_at_the_header_deadline():
    with serving(SlowPredictor(delay=2.0), Limits(), header_timeout=1.0) as (url, _):
        idle, slow = _raw(url), _raw(url)
        slow.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        start = time.monotonic()
        for _ in range(4):  # a header line every 0.3 s would hold plain uvicorn forever
            time.sleep(0.3)
            try:
                slow.sendall(b"X-Slow: 1\r\n")
            except OSError:
                break
        for sock in (idle, slow):
            data, _ = _read_until_closed(sock, 10)
            assert data == b"" and time.monotonic() - start < 5
            sock.close()
        # A request whose answer takes longer than the deadline is not cut, and the connection lives on.
        with httpx.Client(timeout=10) as client:
            assert client.post(f"{url}/predict", json={"text": "slow answer"}).status_code == 200
            assert client.get(f"{url}/health").status_code == 200


def test_connections_beyond_the_concurrency_limit_get_503():
    with serving(SlowPredictor(), Limits(), limit_concurrency=4) as (url, _):
        held = [_raw(url) for _ in range(4)]  # idle sockets count against the limit
        time.sleep(0.2)
        refused = httpx.get(f"{url}/health")
        for sock in held:
            sock.close()
        time.sleep(0.2)
        assert refused.status_code == 503
        assert httpx.get(f"{url}/health").status_code == 200


@pytest.fixture(scope="module")
def hypothesis_predictor(tiny_model):
    return EmotionPredictor.from_pretrained(tiny_model)


async def _post_in_process(predictor, body: bytes, content_type: str) -> httpx.Response:
    app = create_app(predictor, Limits(max_chars=200, max_texts=8))
    async with app.router.lifespan_context(app):  # starts the batching worker
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            return await asyncio.wait_for(
                client.post("/predict", content=body, headers={"content-type": content_type}), 10
            )


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(["text", "texts", "top_words", "x"]) | st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=12,
)
# Near-valid requests: the shapes a client means to send, with empty, blank, long or odd texts.
TEXTS = st.text(max_size=300) | st.sampled_from(["", "   ", "\u200b", "i feel happy"])
REQUESTS = st.fixed_dictionaries(
    {}, optional={"text": TEXTS, "texts": st.lists(TEXTS, max_size=10), "top_words": st.integers(-3, 30)}
)


@settings(
    max_examples=50, deadline=10_000, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(
    body=st.one_of(
        REQUESTS.map(lambda v: json.dumps(v).encode()),
        JSONISH.map(lambda v: json.dumps(v).encode()),
        st.binary(max_size=200),
    ),
    content_type=st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded"]),
)
def test_any_body_gets_an_answer_and_never_a_500(hypothesis_predictor, body, content_type):
    answer = asyncio.run(_post_in_process(hypothesis_predictor, body, content_type))
    if answer.status_code == 200:
        assert answer.json()["predictions"]
    else:
        assert 400 <= answer.status_code < 500, answer.text
        assert isinstance(answer.json()["error"], str)
