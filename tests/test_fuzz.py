"""Property tests: any text a user can type or a file can hold gets an answer or a documented error."""

import io

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from emotion_lab.data.labels import LABELS
from emotion_lab.data.sources import DataFormatError, read_split_file
from emotion_lab.inference import EmotionPredictor
from emotion_lab.models.encoder import load_tokenizer
from emotion_lab.models.networks import BiLSTMAttentionNet
from emotion_lab.predict import interactive

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
RTL = "أنا سعيد جدا اليوم ‏שלום‎"
AWKWARD = ["", " ", "\x00\x07\x1b[31m", "😊🔥💔" * 50, RTL, "a" * 100_000, "i feel\u200bhappy", "\ufeffi feel fine"]


@pytest.fixture(scope="module")
def predictor(tiny_encoder):
    torch.manual_seed(0)
    net = BiLSTMAttentionNet(tiny_encoder, lstm_hidden=8, attn_heads=2)
    return EmotionPredictor(net, load_tokenizer(tiny_encoder), max_length=32)


@FUZZ
@given(texts=st.lists(st.text(max_size=300), min_size=1, max_size=8))
@example(texts=AWKWARD)
def test_every_text_gets_one_prediction_in_order(predictor, texts):
    predictions = predictor.predict(texts, batch_size=3, top_words=2)
    assert len(predictions) == len(texts)
    for prediction in predictions:
        assert prediction.label in LABELS and set(prediction.probs) == set(LABELS)
        assert sum(prediction.probs.values()) == pytest.approx(1.0, abs=1e-4)
    # Input order (not the length-sorted order of the batches inside), and padding changes nothing.
    for text, prediction in zip(texts, predictions):
        alone = predictor.predict([text])[0].probs
        assert all(prediction.probs[label] == pytest.approx(alone[label], abs=1e-4) for label in LABELS)


@FUZZ
@given(
    lines=st.lists(
        st.text(alphabet=st.characters(blacklist_characters="\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"), max_size=200),
        max_size=6,
    )
)
@example(lines=AWKWARD)
def test_the_loop_answers_every_non_empty_line(predictor, lines):
    stdin = io.StringIO("".join(line + "\n" for line in lines))
    stdout = io.StringIO()
    interactive(predictor, stdin=stdin, stdout=stdout)
    # Expected without the loop's own helpers: lines up to an exit word that hold a visible character.
    expected = 0
    for line in lines:
        visible = "".join(ch if ch.isprintable() else " " for ch in line).strip()
        if visible.lower() in ("exit", "quit", ":q"):
            break
        expected += any(not ch.isspace() for ch in visible)
    rows = [row for row in stdout.getvalue().splitlines() if row.split("\t")[0] in LABELS]
    assert len(rows) == expected
    assert all(row.count("=") == len(LABELS) for row in rows)  # every class's probability on each row


@FUZZ
@given(lines=st.lists(st.text(max_size=120), max_size=12))
@example(lines=["i feel fine;joy", "a;b;c;sadness", ";joy", "no separator", "x;JOY", "\ufeffi am ok;love", "ok;fear\r"])
def test_the_data_parser_reads_or_names_the_bad_line(tmp_path_factory, lines):
    path = tmp_path_factory.mktemp("fuzz") / "train.txt"
    path.write_text("\n".join(lines), encoding="utf-8", errors="surrogatepass")
    try:
        result = read_split_file(path)
    except DataFormatError as err:
        assert "train.txt:" in str(err) or "not valid UTF-8" in str(err)
        assert "\n" not in str(err)
    else:
        assert len(result.texts) == len(result.labels) and all(0 <= label < len(LABELS) for label in result.labels)
    try:
        skipped = read_split_file(path, on_bad_line="skip")
    except DataFormatError as err:  # only an undecodable file stops skip mode
        assert "not valid UTF-8" in str(err)
    else:
        stored = path.read_text(encoding="utf-8-sig").splitlines()
        assert len(skipped.texts) + len(skipped.skipped) == sum(bool(line.strip()) for line in stored)
