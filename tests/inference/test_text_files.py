"""Uploaded files read as their extension says, errors naming file and line, and a CSV safe to open."""

import csv
import io

import pytest

from emotion_lab.inference.predictor import Prediction
from emotion_lab.inference.text_files import TextFileError, predictions_csv, read_texts
from emotion_lab.labels import LABELS


@pytest.mark.parametrize(
    "filename, content",
    [
        ("a.txt", "i feel happy\n\n  i am scared \r\nwow\n"),
        ("a.TXT", "\ufeffi feel happy\ni am scared\nwow"),
        ("a.csv", 'id,text\n1,i feel happy\n2,"  i am scared"\n3,\n4,wow\n'),
        ("dir/a.jsonl", '{"text": "i feel happy"}\n\n{"text": "i am scared", "id": 2}\n{"text": "wow"}\n'),
    ],
)
def test_each_format_gives_its_non_empty_texts_in_order(filename, content):
    assert read_texts(filename, content) == ["i feel happy", "i am scared", "wow"]


@pytest.mark.parametrize(
    "filename, content, message",
    [
        ("notes.pdf", "x", "notes.pdf: not a .txt, .csv, .jsonl, .ndjson file"),
        ("notes", "x", "notes: not a .txt"),
        ("a.txt", "\n  \n", "a.txt: no texts in it"),
        ("a.csv", "id,sentence\n1,hi\n", "a.csv: no column 'text' (columns: ['id', 'sentence'])"),
        ("a.csv", 'text\nfine\n"unclosed\n', "a.csv:3: row 3 (the header is row 1) is not valid CSV"),
        ("a.jsonl", '{"text": "fine"}\n{"text": oops}\n', "a.jsonl:2: not valid JSON"),
        ("a.jsonl", '{"text": "fine"}\n["a list"]\n', "a.jsonl:2: no field 'text'"),
        ("a.jsonl", '{"text": "fine"}\n' + "[" * 100_000 + "\n", "a.jsonl:2: not valid JSON here (nested too deeply)"),
        ("x\ud800\n.exe", "x", "x\\ud800\\n.exe: not a .txt"),  # a name JSON cannot encode, or two lines
    ],
)
def test_a_bad_file_is_one_line_naming_file_and_line(filename, content, message):
    with pytest.raises(TextFileError) as caught:
        read_texts(filename, content)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_the_csv_has_one_row_per_text_and_neutralises_formulas():
    texts = ['=HYPERLINK("http://x")', "+1", "-2 degrees", "@mention", "\tcmd", "\rcmd", "  =1+1"]
    texts += ["plain, with a comma", 'say "hi"', "a = b"]
    predictions = [Prediction("joy", {label: i / 10 for i, label in enumerate(LABELS)}) for _ in texts]
    rows = list(csv.reader(io.StringIO(predictions_csv(texts, predictions, LABELS))))
    assert rows[0] == ["text", "label", *(f"p_{label}" for label in LABELS)]
    assert [row[0] for row in rows[1:]] == ["'" + t for t in texts[:7]] + texts[7:]
    assert all(row[1] == "joy" and float(row[3]) == pytest.approx(0.1) for row in rows[1:])
