"""Where the dair-ai/emotion splits come from: a local `text;label` folder or the Hugging Face Hub.

Resolution order (first hit wins):
1. an explicit folder (`data.dir` in config),
2. the `EMOTION_DATA_DIR` environment variable,
3. the known offline copies in `fallback_dirs` (this project's `../shared/data/emotion`),
4. the hub id (`dair-ai/emotion`) through `datasets.load_dataset`.
An explicit folder that does not exist is an error, never a silent fall-through to the hub.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from datasets import Dataset, DatasetDict

from emotion_lab.errors import ConfigError, UserInputError, first_line
from emotion_lab.labels import LABEL2ID, LABELS
from emotion_lab.utils.config import compose_train

log = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "validation", "test")
# The plain-text layout names the validation split `val.txt`.
SPLIT_FILES: dict[str, str] = {"train": "train.txt", "validation": "val.txt", "test": "test.txt"}
DATA_DIR_ENV = "EMOTION_DATA_DIR"
BOM = b"\xef\xbb\xbf"


class DataSourceError(UserInputError, FileNotFoundError):
    """The data folder or hub dataset cannot be found."""


class DataFormatError(UserInputError, ValueError):
    """A data file has a line that is not `text;label` with a known label."""


@dataclass
class SplitReadResult:
    texts: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def read_split_file(path: Path, on_bad_line: str = "error") -> SplitReadResult:
    r"""Read one `text;label` file.

    The label is what follows the *last* `;`, so a text that itself holds a `;` survives.
    Lines end at `\n` only (a `\r` before it is dropped): U+2028, U+0085 or a form feed inside a
    sentence stay part of it. `on_bad_line="error"` raises on the first bad line naming file and
    line; `"skip"` drops it and records why (the caller logs the count). Bytes that are not UTF-8
    stop either mode: that is a wrong encoding for the whole file, and skipping would drop every
    line with an accent.
    """
    if on_bad_line not in ("error", "skip"):
        raise ConfigError(f"data.on_bad_line={on_bad_line!r}: allowed values are 'error' and 'skip'")
    result = SplitReadResult()
    for line_no, line in _lines(path):
        if not line.strip():
            continue
        text, sep, label = line.rpartition(";")
        text, label = text.strip(), label.strip()
        problem = None
        if not sep:
            problem = "no ';' separating text and label"
        elif not text:
            problem = "empty text"
        elif label not in LABEL2ID:
            problem = f"unknown label {label!r} (allowed: {', '.join(LABELS)})"
        if problem:
            where = f"{path}:{line_no}: {problem}"
            if on_bad_line == "error":
                raise DataFormatError(f"{where} in {line[:80]!r} (data.on_bad_line=skip drops such lines)")
            result.skipped.append(where)
            continue
        result.texts.append(text)
        result.labels.append(LABEL2ID[label])
    return result


def read_labelled_file(path: Path, name: str | None = None, on_bad_line: str = "error") -> SplitReadResult:
    """A `text;label` file that must exist and hold at least one line; `name` is how errors call it (the path)."""
    name = name or str(path)
    if not Path(path).is_file():
        raise DataSourceError(f"{name}: no such file (a `text;label` file)")
    rows = read_split_file(Path(path), on_bad_line=on_bad_line)
    if not rows.texts:
        raise DataSourceError(f"{name}: no `text;label` lines")
    return rows


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    r"""`(line number, line)` for each `\n`-ended line, without its `\r\n` or `\n`."""
    offset = 0  # bytes before the current line, a byte-order mark included
    # Binary mode splits on b"\n" alone and keeps byte offsets exact.
    with open(path, "rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            start, offset = offset, offset + len(raw)
            # A byte-order mark some editors write is not part of the first sentence.
            skip = len(BOM) if line_no == 1 and raw.startswith(BOM) else 0
            try:
                line = raw[skip:].decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataFormatError(
                    f"{path}:{line_no}: not valid UTF-8 ({err.reason} at byte {start + skip + err.start})"
                ) from None
            yield line_no, line.removesuffix("\n").removesuffix("\r")


def load_local_splits(data_dir: Path, on_bad_line: str = "error") -> DatasetDict:
    """Load `train.txt`, `val.txt` and `test.txt` from a folder into a DatasetDict."""
    missing = [name for name in SPLIT_FILES.values() if not (data_dir / name).is_file()]
    if missing:
        raise DataSourceError(f"{data_dir}: missing {', '.join(missing)} (expected {', '.join(SPLIT_FILES.values())})")
    splits = {}
    for split, filename in SPLIT_FILES.items():
        result = read_split_file(data_dir / filename, on_bad_line=on_bad_line)
        if result.skipped:
            log.warning("%s: skipped %d bad line(s), first: %s", filename, len(result.skipped), result.skipped[0])
        if not result.texts:
            raise DataFormatError(f"{data_dir / filename}: no usable lines (empty, or every line skipped)")
        splits[split] = Dataset.from_dict({"text": result.texts, "label": result.labels})
    return DatasetDict(splits)


def load_hub_splits(hub_id: str) -> DatasetDict:
    """Load the splits from the Hub (or the local `datasets` cache), with a clear error offline."""
    from datasets import load_dataset

    try:
        loaded = load_dataset(hub_id)
    except Exception as err:  # datasets raises many types for "not reachable"; all mean the same here
        raise DataSourceError(
            f"No local copy of the emotion data was found and the hub dataset {hub_id!r} could not be loaded "
            f"({type(err).__name__}: {first_line(err)}). "
            f"Point emotion_lab at a folder holding train.txt, val.txt and test.txt (`text;label` lines): "
            f"`data.dir=/path/to/emotion` on the command line or `export {DATA_DIR_ENV}=/path/to/emotion`."
        ) from None
    names = loaded["train"].features["label"].names
    if tuple(names) != LABELS:
        raise DataFormatError(f"{hub_id}: label names {names} differ from emotion_lab's {list(LABELS)}")
    return DatasetDict({split: loaded[split].select_columns(["text", "label"]) for split in SPLITS})


def resolve_data_dir(
    data_dir: str | os.PathLike | None, fallback_dirs: Sequence[str | os.PathLike] = ()
) -> Path | None:
    """The local folder to read, or None to use the hub."""
    if data_dir is not None:
        path = Path(data_dir).expanduser()
        if not path.is_dir():
            raise DataSourceError(f"data.dir={str(data_dir)!r} is not a folder (expected train.txt, val.txt, test.txt)")
        return path
    env_dir = os.environ.get(DATA_DIR_ENV)
    if env_dir:
        path = Path(env_dir).expanduser()
        if not path.is_dir():
            raise DataSourceError(f"{DATA_DIR_ENV}={env_dir!r} is not a folder (expected train.txt, val.txt, test.txt)")
        return path
    for candidate in fallback_dirs:
        path = Path(candidate).expanduser()
        if all((path / name).is_file() for name in SPLIT_FILES.values()):
            return path.resolve()
    return None


def load_splits(
    data_dir: str | os.PathLike | None = None,
    fallback_dirs: Sequence[str | os.PathLike] = (),
    hub_id: str = "dair-ai/emotion",
    on_bad_line: str = "error",
    limit: int | None = None,
) -> tuple[DatasetDict, str]:
    """Load the three splits (the first `limit` sentences of each, if set); returns them with a
    description of their source for the logs."""
    local = resolve_data_dir(data_dir, fallback_dirs)
    if local is not None:
        splits, source = load_local_splits(local, on_bad_line=on_bad_line), str(local)
    else:
        splits, source = load_hub_splits(hub_id), f"hub:{hub_id}"
    if limit:
        splits = DatasetDict({name: rows.select(range(min(limit, len(rows)))) for name, rows in splits.items()})
    return splits, source


def configured_splits(data_dir: str | None, limit: int | None = None) -> tuple[DatasetDict, str]:
    """The splits found where training finds them (emotion_lab/conf/data, or `data_dir`), and their source."""
    data = compose_train([f"data.dir={data_dir}"] if data_dir else [], Path(".")).data
    return load_splits(data.dir, data.fallback_dirs, data.hub_id, data.on_bad_line, limit)


def test_split(data_dir: str | None) -> tuple[list[str], list[int], str]:
    """The test split's texts and label ids, found as training finds them (emotion_lab/conf/data), and their source."""
    splits, source = configured_splits(data_dir)
    return list(splits["test"]["text"]), list(splits["test"]["label"]), source
