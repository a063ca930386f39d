"""Ping files as chunks of records: JSON Lines or CSV, optionally gzipped, in file order.

A row that cannot be parsed still becomes a :class:`~stream.contract.Record` (with ``fields`` None
and the parse error), so the decoder rejects it with its line number instead of losing it.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from stream.contract import PING_FIELDS, InputError, Record
from stream.sources.text_files import open_text


def ping_format(path: str | Path) -> str:
    """``jsonl`` or ``csv`` from a file name (``.gz`` allowed on either)."""
    name = str(path).lower().removesuffix(".gz")
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if name.endswith(".csv"):
        return "csv"
    raise InputError(f"{path}: unknown ping file type (use .jsonl, .ndjson or .csv, "
                     "optionally .gz)")


def _csv_value(name: str, text: str | None) -> Any:
    if text is None or text == "":
        return None
    if name in ("ts", "home_mcc"):
        return int(text) if text.lstrip("-").isdigit() else text
    if name in ("lat", "lon"):
        try:
            return float(text)
        except ValueError:
            return text
    return text


def read_records(paths: Iterable[str | Path], chunk_rows: int = 100_000) -> Iterator[list[Record]]:
    """Yield chunks of at most ``chunk_rows`` records from ping files, in file order.

    Raises :class:`~stream.contract.InputError` for an unknown file type, a missing file or a CSV
    header without ``device``, ``ts`` and ``operator``; bad rows are records, never errors.
    """
    chunk: list[Record] = []
    for path in paths:
        kind = ping_format(path)
        with open_text(path) as fh:
            if kind == "jsonl":
                for line_no, line in enumerate(fh, start=1):
                    text = line.strip()
                    if not text:
                        continue
                    src = f"{path}:{line_no}"
                    try:
                        obj = json.loads(text)
                    except json.JSONDecodeError as exc:
                        chunk.append(Record(src, None, text, f"malformed JSON: {exc.msg}"))
                    else:
                        if isinstance(obj, dict):
                            chunk.append(Record(src, obj, text))
                        else:
                            chunk.append(Record(src, None, text, "not a JSON object"))
                    if len(chunk) >= chunk_rows:
                        yield chunk
                        chunk = []
            else:
                reader = csv.reader(fh)
                header = [h.strip() for h in next(reader, [])]
                missing = [c for c in ("device", "ts", "operator") if c not in header]
                if missing:
                    raise InputError(f"{path}: missing column(s) {', '.join(missing)}")
                for line_no, row in enumerate(reader, start=2):
                    src = f"{path}:{line_no}"
                    if len(row) != len(header):
                        chunk.append(Record(src, None, ",".join(row),
                                            f"expected {len(header)} columns, got {len(row)}"))
                    else:
                        rec = {h: _csv_value(h, v.strip()) for h, v in zip(header, row, strict=True)
                               if h in PING_FIELDS}
                        chunk.append(Record(src, rec, ",".join(row)))
                    if len(chunk) >= chunk_rows:
                        yield chunk
                        chunk = []
    if chunk:
        yield chunk
