"""The page at GET /, driven in a real browser (Debian's chromium through Playwright): it predicts as you
type, explains, runs a file and offers its CSV, shows every refusal as a message, and runs no code a
text, a file or the model card brings."""

import csv
import io
import json

import pytest

httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")
playwright = pytest.importorskip("playwright.sync_api")
expect = playwright.expect  # checks run in Playwright's own world: the page's policy forbids eval in its own

from emotion_lab.inference.batching import Limits  # noqa: E402
from emotion_lab.inference.explain_worker import ExplainWorker  # noqa: E402
from emotion_lab.inference.predictor import EmotionPredictor  # noqa: E402
from emotion_lab.inference.server import create_app  # noqa: E402
from emotion_lab.labels import LABELS  # noqa: E402
from emotion_lab.tools.load_test import wait_for_explanations  # noqa: E402
from emotion_lab.tools.page_screenshot import chromium, serving  # noqa: E402

pytestmark = pytest.mark.slow
HOSTILE = ["<script>window.pwned = 1</script>", '<img src="x" onerror="window.pwned = 2">']
CARD = f"# tiny model\n\n{HOSTILE[1]} and {HOSTILE[0]}\n"


@pytest.fixture(scope="module")
def url(tiny_model):
    limits = Limits(max_chars=1000, max_texts=8)
    worker = ExplainWorker(tiny_model, limits, steps=8)
    with serving(create_app(EmotionPredictor.from_pretrained(tiny_model), limits, card=CARD, explainer=worker)) as url:
        wait_for_explanations(url)
        yield url


@pytest.fixture(scope="module")
def browser():
    with chromium(accept_downloads=True) as context:  # one browser for the module
        yield context


@pytest.fixture
def page(browser, url):
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    # Something the policy blocked (an inline style or script) shows only as a console error.
    page.on("console", lambda msg: "Content Security Policy" in msg.text and errors.append(msg.text))
    page.goto(url)
    expect(page.locator("#backend")).not_to_have_text("loading…")
    yield page
    assert errors == []  # no script error and nothing blocked, whatever the test did
    page.close()


def meters(page) -> dict[str, float]:
    return page.eval_on_selector_all(
        "#bars [data-label]",
        "rows => Object.fromEntries(rows.map(r => [r.dataset.label, r.querySelector('meter').value]))",
    )


def test_typing_predicts_shows_the_bars_and_shades_the_words(page, tiny_model):
    predictor = EmotionPredictor.from_pretrained(tiny_model)
    shown = []
    # An emoji: the server's offsets count code points, JavaScript's strings UTF-16 units.
    for text in ["i feel so happy today", "he lied to me 🦜 again and i am furious"]:
        page.fill("#text", text)
        expected = predictor(text)
        # The explanation is asked for once this text's prediction is shown.
        expect(page.locator("#explanation")).to_have_text(text, timeout=30_000)
        assert page.text_content("#label") == expected.label
        assert list(meters(page)) == list(LABELS)
        assert meters(page) == pytest.approx(expected.probs, abs=1e-4)
        expect(page.locator("#explanation .word")).to_have_text(text.split())
        assert "integrated gradients" in page.text_content("#legend")
        # The strongest words in words too: colour alone reaches neither every eye nor a screen reader.
        top = max(predictor.explain([text])[0].words, key=lambda w: abs(w.score))
        assert f"Strongest: {top.text} {'+' if top.score >= 0 else '−'}{abs(top.score):.2f}" in page.text_content(
            "#legend"
        )
        shown.append(meters(page))
    assert shown[0] != shown[1]


def test_an_older_answer_never_overwrites_a_newer_one(page, tiny_model):
    held = []  # the first prediction request, kept unanswered until a newer text has been answered
    page.route("**/predict", lambda route: route.continue_() if held else held.append(route))
    page.fill("#text", "i feel so happy today")
    for _ in range(200):  # bounded: the page sends it after its debounce
        if held:
            break
        page.wait_for_timeout(50)
    assert held
    newer = "this is terrifying"
    page.fill("#text", newer)
    expect(page.locator("#explanation")).to_have_text(newer, timeout=30_000)
    stale = {label: float(label == "surprise") for label in LABELS}
    try:
        held[0].fulfill(status=200, content_type="application/json", body=json.dumps(
            {"backend": "stale", "predictions": [{"label": "surprise", "probs": stale, "truncated": False}]}
        ))  # fmt: skip
    except playwright.Error:
        pass  # the page already dropped that request
    page.wait_for_timeout(500)
    expected = EmotionPredictor.from_pretrained(tiny_model)(newer)
    assert page.text_content("#label") == expected.label
    assert meters(page) == pytest.approx(expected.probs, abs=1e-4)


def test_one_explanation_at_a_time_and_then_only_the_newest_text(page):
    held = []  # explanation requests, answered only when the test lets them through

    def hold_explanations(route):
        if json.loads(route.request.post_data or "{}").get("explain"):
            held.append(route)
        else:
            route.continue_()

    def wait_until(done) -> None:
        for _ in range(200):  # bounded: 10 s
            if done():
                return
            page.wait_for_timeout(50)
        raise AssertionError("the page did not get there")

    page.route("**/predict", hold_explanations)
    for text in ["i feel so happy today", "this is terrifying", "what a lovely surprise"]:
        page.fill("#text", text)
        expect(page.locator("#result")).not_to_have_class("stale", timeout=10_000)  # predicted, not explained
        wait_until(lambda: held)
    page.wait_for_timeout(500)
    assert len(held) == 1  # the later texts did not send a second explanation while one was out
    held[0].continue_()
    wait_until(lambda: len(held) == 2)
    assert json.loads(held[1].request.post_data)["text"] == "what a lovely surprise"  # the middle one skipped
    held[1].continue_()
    expect(page.locator("#explanation")).to_have_text("what a lovely surprise", timeout=30_000)


def test_a_three_line_file_gives_a_table_and_a_csv_of_three_rows(page, tmp_path, tiny_model):
    lines = ["i feel happy", "=1+2 is what i am scared of", "wow"]
    page.set_input_files("#file", {"name": "three.txt", "mimeType": "text/plain", "buffer": "\n".join(lines).encode()})
    page.click("#run-batch")
    expect(page.locator("#results tbody tr")).to_have_count(3)
    cells = page.eval_on_selector_all("#results tbody tr", "rows => rows.map(r => r.cells[0].textContent)")
    assert cells == lines
    with page.expect_download() as download:
        page.click("#download")
    saved = tmp_path / "predictions.csv"
    download.value.save_as(saved)
    assert saved.read_bytes().startswith(b"\xef\xbb\xbf")  # a byte-order mark: spreadsheets read it as UTF-8
    rows = list(csv.reader(io.StringIO(saved.read_text(encoding="utf-8-sig"))))
    expected = EmotionPredictor.from_pretrained(tiny_model).predict(lines)
    assert len(rows) == 4 and rows[0][:2] == ["text", "label"]
    assert [r[0] for r in rows[1:]] == ["i feel happy", "'=1+2 is what i am scared of", "wow"]
    assert [r[1] for r in rows[1:]] == [e.label for e in expected]


def test_empty_oversized_refused_and_bad_input_each_show_a_message(page):
    page.fill("#text", "i feel fine")
    expect(page.locator("#label")).not_to_be_empty()
    page.fill("#text", "   ")
    expect(page.locator("#message")).to_contain_text("Type a sentence")
    expect(page.locator("#label")).to_be_empty()
    page.fill("#text", "a" * 100_000)
    expect(page.locator("#message")).to_contain_text("has 100000 characters; the limit is 1000")
    expect(page.locator("#message")).to_be_visible()
    page.set_input_files(
        "#file", {"name": "notes.jsonl", "mimeType": "application/json", "buffer": b'{"text": "ok"}\nnope\n'}
    )
    page.click("#run-batch")
    expect(page.locator("#batch-message")).to_contain_text("notes.jsonl:2: not valid JSON")
    # A server that sheds load: the page says so and when to retry, and stays usable.
    page.route(
        "**/predict",
        lambda route: route.fulfill(
            status=503, headers={"Retry-After": "2"}, content_type="application/json", body='{"error": "server busy"}'
        ),
    )
    page.fill("#text", "i feel happy")
    expect(page.locator("#message")).to_contain_text("server busy (retry in 2 s)")
    page.unroute("**/predict")
    page.fill("#text", "i feel happy again")
    expect(page.locator("#label")).not_to_be_empty()


def test_texts_files_and_the_model_card_are_shown_as_text_and_never_run(page, url):
    for text in HOSTILE:
        page.fill("#text", text)
        expect(page.locator("#explanation")).to_have_text(text, timeout=30_000)
    page.set_input_files("#file", {"name": "x.txt", "mimeType": "text/plain", "buffer": "\n".join(HOSTILE).encode()})
    page.click("#run-batch")
    expect(page.locator("#results tbody tr")).to_have_count(2)
    assert page.eval_on_selector_all("#results tbody tr", "rows => rows.map(r => r.cells[0].textContent)") == HOSTILE
    card = httpx.get(f"{url}/model").json()["card"]  # as served: absolute-looking paths reduced to names
    assert page.text_content("#card") == card and HOSTILE[1] in card
    assert page.evaluate("window.pwned") is None
    assert page.eval_on_selector_all("main img, main script", "found => found.length") == 0


def test_the_page_is_usable_at_360_pixels_and_by_keyboard(page):
    page.set_viewport_size({"width": 360, "height": 800})
    page.fill("#text", "i feel so happy today")
    expect(page.locator("#label")).not_to_be_empty()
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    unnamed = page.evaluate(
        """() => [...document.querySelectorAll('input, textarea, button')]
            .filter(e => !e.hidden && !(e.labels?.length || e.textContent.trim() || e.getAttribute('aria-label')))
            .map(e => e.id)"""
    )
    assert unnamed == []
    page.focus("#text")
    reached = []
    for _ in range(6):
        page.keyboard.press("Tab")
        reached.append(page.evaluate("document.activeElement.id"))
    assert {"batch-text", "file", "run-batch"} <= set(reached)
    # By keyboard alone: type texts, run them, download; the table fits 360 px by scrolling in its own box.
    page.focus("#batch-text")
    page.keyboard.type("i feel happy\nthis is terrifying")
    page.focus("#run-batch")
    page.keyboard.press("Enter")
    expect(page.locator("#results tbody tr")).to_have_count(2)
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    page.focus("#download")
    with page.expect_download() as download:
        page.keyboard.press("Enter")
    assert download.value.suggested_filename == "predictions.csv"
