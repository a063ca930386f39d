"""Opening text input files: UTF-8, optionally gzipped, with a clear error when missing."""

from __future__ import annotations

import gzip
import io
from pathlib import Path
from typing import IO

from stream.contract import InputError


def open_text(path: str | Path) -> IO[str]:
    """Open a text file for reading, transparently un-gzipping ``.gz`` files.

    Raises :class:`~stream.contract.InputError` when the file does not exist.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")
