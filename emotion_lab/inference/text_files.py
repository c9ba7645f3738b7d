"""Texts from .txt, .csv and .jsonl files, and predictions as a CSV a spreadsheet opens safely.

    texts_in(handle, ".csv", "notes.csv")     # lazily, one text per line or row ("" for an empty one)
    read_texts("notes.csv", content)          # an uploaded file's non-empty texts, as a list
    predictions_csv(texts, predictions, labels)

.txt: one text per line; .csv: the column `text_column` (a header row first); .jsonl / .ndjson: one
JSON object per line with a field `text_column`. Errors are one line naming the file and the line
(`notes.csv:3: ...`). `predict --input` streams files through `texts_in`; the server reads uploads
with `read_texts`.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Sequence
from typing import TextIO

from emotion_lab.errors import UserInputError
from emotion_lab.inference.predictor import Prediction

EXTENSIONS = (".txt", ".csv", ".jsonl", ".ndjson")
# Ten times the 100,000 characters docs/safety.md promises a prediction for (the model reads only its
# first max_length word-pieces anyway); still a bound, so an unclosed quote cannot pull the rest of a
# large file into memory as one field.
CSV_FIELD_LIMIT = 1_000_000
# A cell starting with one of these is a formula to a spreadsheet (OWASP's CSV injection list).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class TextFileError(UserInputError, ValueError):
    """A file whose texts cannot be read as asked; the message names the file and the line."""


def texts_in(handle: TextIO, suffix: str, source: str, text_column: str = "text") -> Iterator[str]:
    """The texts of an open file read as `suffix` says (other suffixes: one text per line), lazily; an
    empty line gives "", keeping texts aligned with lines."""
    if suffix == ".csv":
        yield from _csv_texts(handle, source, text_column)
    elif suffix in (".jsonl", ".ndjson"):
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                yield ""
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise TextFileError(f"{source}:{line_no}: not valid JSON ({err.msg})") from None
            except RecursionError:  # json's parser recurses per nesting level
                raise TextFileError(f"{source}:{line_no}: not valid JSON here (nested too deeply)") from None
            if not isinstance(record, dict) or text_column not in record:
                raise TextFileError(f"{source}:{line_no}: no field {text_column!r}; use --text-column")
            yield str(record[text_column])
    else:
        for line in handle:
            yield line.rstrip("\r\n")


def _csv_texts(handle: TextIO, source: str, text_column: str) -> Iterator[str]:
    csv.field_size_limit(CSV_FIELD_LIMIT)
    # strict: a stray or unclosed quote is an error, not rows silently merged into one text.
    reader = csv.DictReader(handle, strict=True)
    done = 0  # rows read, numbered as a spreadsheet does: the header is row 1
    try:
        columns = reader.fieldnames
        done = 1
        if columns is None or text_column not in columns:
            raise TextFileError(f"{source}: no column {text_column!r} (columns: {columns}); use --text-column")
        for record in reader:
            done += 1
            yield record[text_column] or ""
    except csv.Error as err:
        # DictReader.line_num counts only rows it returned; its csv.reader's counts the failed one.
        line = reader.reader.line_num
        raise TextFileError(f"{source}:{line}: row {done + 1} (the header is row 1) is not valid CSV ({err})") from None


def upload_name(filename: str) -> str:
    """An uploaded file's name as messages may show it: its last part, at most 100 characters, with
    anything unprintable (a newline, a lone surrogate that JSON cannot encode) escaped."""
    name = filename.replace("\\", "/").rsplit("/", 1)[-1] or "the file"
    shown = "".join(c if c.isprintable() and not 0xD800 <= ord(c) <= 0xDFFF else ascii(c)[1:-1] for c in name)
    return shown if len(shown) <= 100 else shown[:99] + "…"


def read_texts(filename: str, content: str) -> list[str]:
    """The non-empty texts of an uploaded file, read as its extension says (one of `EXTENSIONS`)."""
    name = upload_name(filename)
    suffix = "." + name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if suffix not in EXTENSIONS:
        raise TextFileError(f"{name}: not a {', '.join(EXTENSIONS)} file (its extension says how to read it)")
    texts = [text.strip() for text in texts_in(io.StringIO(content.removeprefix("\ufeff"), newline=""), suffix, name)]
    texts = [text for text in texts if text]
    if not texts:
        raise TextFileError(f"{name}: no texts in it")
    return texts


def _cell(value: str) -> str:
    # Spreadsheets skip leading spaces before they look for a formula.
    return "'" + value if value.lstrip(" ").startswith(_FORMULA_START) else value


def predictions_csv(texts: Sequence[str], predictions: Sequence[Prediction], labels: Sequence[str]) -> str:
    """text, label, p_<label>...: the columns of `predict --output x.csv`, for a spreadsheet: formula-like
    texts are neutralised here (`predict` writes texts as they are, for programs)."""
    out = io.StringIO(newline="")
    writer = csv.writer(out)
    writer.writerow(["text", "label", *(f"p_{label}" for label in labels)])
    for text, prediction in zip(texts, predictions, strict=True):
        writer.writerow([_cell(text), prediction.label, *(f"{prediction.probs[label]:.6f}" for label in labels)])
    return out.getvalue()
