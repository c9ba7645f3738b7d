"""Writes that either complete or leave the old file in place: a temporary file beside the target,
flushed to disk, then renamed over it (a rename within one folder is atomic on POSIX and Windows)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kwargs) -> Iterator[IO]:
    """Open a temporary file beside `path` for writing; on a clean exit it replaces `path`, on an
    exception it is deleted and `path` is untouched. `kwargs` go to `open` (encoding, newline)."""
    if mode not in ("w", "wb", "wt"):
        raise ValueError(f"atomic_open writes a whole file: mode={mode!r} must be 'w' or 'wb'")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file private (0600); keep the old file's mode, else what open() would give.
        os.chmod(temporary, target.stat().st_mode & 0o777 if target.exists() else 0o666 & ~_umask())
        with open(handle, mode, **kwargs) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def write_text(path: str | Path, text: str, encoding: str = "utf-8") -> None:
    """`Path.write_text`, atomically."""
    with atomic_open(path, "w", encoding=encoding) as file:
        file.write(text)


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path, "wb") as file:
        file.write(data)
