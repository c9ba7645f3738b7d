"""Property tests: any text a user can type or a file can hold gets an answer or a documented error."""

import io
import re

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from emotion_lab.data.sources import DataFormatError, read_split_file
from emotion_lab.encoders.loading import load_tokenizer
from emotion_lab.inference import EmotionPredictor
from emotion_lab.labels import LABELS
from emotion_lab.models.networks import BiLSTMAttentionNet
from emotion_lab.predict import interactive

# For tests that read no model or predict a few short sentences: they afford more examples.
MANY = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
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


# The loop, by construction: a sentence wrapped in characters that carry no meaning (spaces, tabs,
# control and format characters, Unicode line and paragraph separators) is answered as the sentence
# alone; a line of those characters alone gets the hint; an exit word, in any case and so wrapped,
# ends the loop and nothing after it is read.
NOISE = " \t\r\x00\x07\x0b\x0c\x1b\x7f\x85\x9b\u200b\u2028\u2029\ufeff"
noise = st.text(alphabet=NOISE, max_size=4)
words = st.text(alphabet=st.characters(categories=("L", "N", "P", "S")), min_size=1, max_size=10)
sentence = (
    st.lists(words, min_size=1, max_size=4).map(" ".join).filter(lambda t: t.lower() not in ("exit", "quit", ":q"))
)
loop_line = st.one_of(
    st.tuples(st.just("say"), noise, sentence, noise),
    st.tuples(st.just("blank"), noise, st.just(""), noise),
    st.tuples(st.just("exit"), noise, st.sampled_from(["exit", "QUIT", "Exit", ":q"]), noise),
)


def _answer(row: str) -> tuple[str, dict[str, float]]:
    label, scores = row.split("\t")
    return label, {k: float(v) for k, v in (pair.split("=") for pair in scores.split("  (")[0].split(" "))}


@MANY
@given(lines=st.lists(loop_line, max_size=6), final_newline=st.booleans())
@example(
    lines=[("say", "\x07", "i feel fine", "\u2028"), ("blank", "\x85", "", "\x0c"), ("exit", " ", "QUIT", "")],
    final_newline=True,
)
def test_the_loop_answers_sentences_hints_blanks_and_stops_at_exit(predictor, lines, final_newline):
    typed = [before + core + after for _, before, core, after in lines]
    stdin = "".join(line + "\n" for line in typed)
    if typed and not final_newline:
        stdin = stdin[:-1]
        if not typed[-1]:  # nothing after the last newline is no line at all
            lines = lines[:-1]
    stdout = io.StringIO()
    answered = interactive(predictor, stdin=io.StringIO(stdin), stdout=stdout)
    rows = stdout.getvalue().split("\n")
    assert rows[0].startswith("emotion_lab ready") and rows[-1] == ""
    rows = rows[1:-1]
    said = []
    for kind, _, core, _ in lines:
        if kind == "exit":
            break
        said.append(core if kind == "say" else None)
    assert len(rows) == len(said) and answered == sum(core is not None for core in said)
    for row, core in zip(rows, said):
        if core is None:
            assert row == "(empty line: type a sentence, or 'exit' to quit)"
            continue
        label, probs = _answer(row)
        alone = predictor.predict([core])[0]
        assert label == alone.label and probs == pytest.approx(alone.probs, abs=1e-4)


# A `text;label` file, by construction. Each line is built with what the reader must find in it:
# ("ok", text, label id), ("bad", what the error says), ("blank",) or ("undecodable", offset of the
# first bad byte within the line). The oracle knows where each line starts because it wrote it: it
# never splits the file again.
SPACE = " \t\x0b\x0c\x1c\x85\u2028\u3000"  # stripped around text and label
INSIDE = list(";\u2028\u2029\x85\x0c\x0b\r\x1c\ufeff😊é漢\u200f")  # what other readers wrongly split on, among others
pad = st.text(alphabet=SPACE, max_size=3)
text = (
    st.lists(
        st.one_of(st.sampled_from(INSIDE), st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=6)),
        min_size=1,
        max_size=8,
    )
    .map(lambda pieces: "".join(pieces).replace("\n", " "))
    .filter(lambda t: t == t.strip() and not t.startswith("\ufeff"))  # what a line holds once trimmed; not a BOM
)
label = st.sampled_from(LABELS)
bad_label = st.one_of(
    st.sampled_from(["JOY", "6", "1", "", "joy joy", "sadness.", "lové"]),
    st.text(alphabet=st.characters(exclude_characters="\n;"), max_size=10),
).filter(lambda t: t.strip() not in LABELS)
# Not UTF-8: stray bytes, a cut sequence, a lone and a paired surrogate (UTF-8 cannot hold either).
INVALID = [b"\xff", b"\x80", b"\xc3", b"\xf0\x9f", b"\xed\xa0\x80", b"\xed\xa0\xbd\xed\xb8\x8a"]


@st.composite
def data_line(draw) -> tuple[bytes, tuple]:
    kind = draw(st.sampled_from(["ok", "ok", "ok", "no_sep", "empty_text", "bad_label", "blank", "undecodable"]))
    if kind == "blank":
        return draw(pad).encode(), ("blank",)
    if kind == "no_sep":
        core = draw(text.filter(lambda t: ";" not in t))
        return (draw(pad) + core + draw(pad)).encode(), ("bad", "no ';' separating text and label")
    if kind == "empty_text":
        return (draw(pad) + ";" + draw(pad) + draw(label)).encode(), ("bad", "empty text")
    core = draw(text)
    if kind == "bad_label":
        wrong = draw(bad_label)
        return (core + ";" + wrong).encode(), ("bad", f"unknown label {wrong.strip()!r}")
    name = draw(label)
    chars = draw(pad) + core + draw(pad) + ";" + draw(pad) + name + draw(pad)
    if kind == "ok":
        return chars.encode(), ("ok", core, LABELS.index(name))
    at = draw(st.integers(0, len(chars)))
    prefix = chars[:at].encode()
    return prefix + draw(st.sampled_from(INVALID)) + chars[at:].encode(), ("undecodable", len(prefix))


@MANY
@given(
    lines=st.lists(st.tuples(data_line(), st.sampled_from([b"\n", b"\r\n"])), max_size=8),
    bom=st.booleans(),
    final_newline=st.booleans(),
)
@example(
    lines=[
        ((b"a\xe2\x80\xa8b;joy", ("ok", "a\u2028b", 1)), b"\r\n"),
        ((b"no sep", ("bad", "no ';' separating text and label")), b"\n"),
    ],
    bom=True,
    final_newline=True,
)
def test_the_data_parser_reads_each_line_or_names_it_exactly(tmp_path_factory, lines, bom, final_newline):
    path = tmp_path_factory.mktemp("fuzz") / "train.txt"
    content, starts = b"\xef\xbb\xbf" if bom else b"", []
    for i, ((raw, _), end) in enumerate(lines):
        starts.append(len(content))
        content += raw + (end if final_newline or i < len(lines) - 1 else b"")
    path.write_bytes(content)
    expected = [what for (_, what), _ in lines]
    numbered = list(enumerate(expected, start=1))

    def undecodable_at(n: int, what: tuple) -> str:
        return rf"^{re.escape(str(path))}:{n}: not valid UTF-8 \(.* at byte {starts[n - 1] + what[1]}\)$"

    valid = [(what[1], what[2]) for what in expected if what[0] == "ok"]
    first_bad = next(((n, what) for n, what in numbered if what[0] in ("bad", "undecodable")), None)
    if first_bad is None:
        result = read_split_file(path)
        assert list(zip(result.texts, result.labels)) == valid and result.skipped == []
    else:
        n, what = first_bad
        with pytest.raises(DataFormatError) as err:
            read_split_file(path)
        message = str(err.value)
        if what[0] == "bad":
            assert message.startswith(f"{path}:{n}: {what[1]}") and "\n" not in message
        else:
            assert re.match(undecodable_at(n, what), message)
    # skip mode: valid lines are exact examples, each bad line is one entry with its own number,
    # and only bytes that are not UTF-8 stop it.
    first_undecodable = next(((n, what) for n, what in numbered if what[0] == "undecodable"), None)
    if first_undecodable is None:
        skipped = read_split_file(path, on_bad_line="skip")
        assert list(zip(skipped.texts, skipped.labels)) == valid
        bad = [(n, what[1]) for n, what in numbered if what[0] == "bad"]
        assert len(skipped.skipped) == len(bad)
        assert all(entry.startswith(f"{path}:{n}: {problem}") for entry, (n, problem) in zip(skipped.skipped, bad))
    else:
        with pytest.raises(DataFormatError, match=undecodable_at(*first_undecodable)):
            read_split_file(path, on_bad_line="skip")
