"""Countries of foreign SIMs: the MCC → country table, and per-country people-per-device factors.

- :func:`load_mcc_table` reads ``mcc,iso2[,country]`` (one row per mobile country code, several
  MCCs may share a country; ``#`` comment lines and blank lines are skipped). Without a path it
  reads the table defacto ships, ``data/mcc_countries.csv`` beside this module, whose header
  comment names its sources and date. MCCs it does not list are the unknown country ``XX``.
- :func:`load_country_factors` reads ``country,factor[,rse]`` rows: people per counted foreign
  SIM of a country (ISO code of the table, ``other`` for the rolled-up small countries, ``*``
  for any country without its own row). They come from an outside source such as border
  statistics (:func:`estimators.foreign.fit_country_factors`); without a row a country's figures
  stay in device counts.

Both raise :class:`~stream.contract.InputError` ``FILE:LINE: what is wrong`` (one line).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from pathlib import Path

from estimators.foreign import ALL, OTHER, CountryFactor
from estimators.mcc import CountryTable
from stream.contract import InputError
from stream.sources.text_files import header_excerpt, open_text, separator_hint

DEFAULT_TABLE = Path(__file__).resolve().parent / "data" / "mcc_countries.csv"
_MCC = re.compile(r"[0-9]{3}")
_ISO2 = re.compile(r"[A-Z]{2}")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
MAX_NUMBER_CHARS = 40


def _rows(path: str | Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """``(line, row)`` of a small CSV with a header, one row per line; ``#`` lines and blank
    lines skipped, values stripped, missing trailing values ``""``. Raises :class:`InputError`
    for a missing column, a row with more values than columns or one the ``csv`` module cannot
    read (an unclosed quote)."""
    header: list[str] | None = None
    with open_text(path) as fh:
        for number, line in enumerate(fh, start=1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            try:
                cells = [c.strip() for c in next(csv.reader([text], strict=True))]
            except csv.Error as exc:
                raise InputError(f"{path}:{number}: not a CSV row ({exc})") from None
            if header is None:
                header = cells
                missing = [c for c in required if c not in header]
                if missing:
                    raise InputError(f"{path}:{number}: missing column(s) {', '.join(missing)} "
                                     f"(header is {header_excerpt(header)})"
                                     f"{separator_hint(header)}")
                continue
            if len(cells) > len(header):
                raise InputError(f"{path}:{number}: {len(cells)} values for {len(header)} columns")
            yield number, dict(zip(header, cells + [""] * (len(header) - len(cells)), strict=True))
    if header is None:
        raise InputError(f"{path}: no header line (expected {','.join(required)})")


def load_mcc_table(path: str | Path | None = None) -> CountryTable:
    """The MCC → country table of ``path`` (default: the one defacto ships).

    Each row: ``mcc`` three digits, ``iso2`` two capital letters (``XX`` allowed: networks of no
    country), an MCC at most once. Raises :class:`InputError` naming the file and line.
    """
    path = DEFAULT_TABLE if path is None else path
    mccs: list[int] = []
    codes: list[str] = []
    first: dict[int, int] = {}
    for line, row in _rows(path, ("mcc", "iso2")):
        mcc, iso2 = row["mcc"], row["iso2"]
        if not _MCC.fullmatch(mcc):
            raise InputError(f"{path}:{line}: mcc must be three digits 000..999, got {mcc[:20]!r}")
        if not _ISO2.fullmatch(iso2):
            raise InputError(f"{path}:{line}: iso2 must be two capital letters (ISO 3166-1 "
                             f"alpha-2), got {iso2[:20]!r}")
        value = int(mcc)
        if value in first:
            raise InputError(f"{path}:{line}: MCC {mcc} is listed twice (first on line "
                             f"{first[value]})")
        first[value] = line
        mccs.append(value)
        codes.append(iso2)
    if not mccs:
        raise InputError(f"{path}: no MCC rows")
    return CountryTable.from_pairs(mccs, codes)


def _number(path: str | Path, line: int, column: str, text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS or not _DECIMAL.fullmatch(text):
        raise InputError(f"{path}:{line}: {column} {text[:MAX_NUMBER_CHARS]!r} is not a decimal "
                         "number")
    return float(text)


def load_country_factors(path: str | Path, table: CountryTable) -> list[CountryFactor]:
    """Per-country factors of foreign SIMs (``country,factor[,rse]``).

    ``country`` is a code of ``table``, ``other`` or ``*``, at most once; ``factor`` people per
    counted device in the calibration's plausible range, ``rse`` (default 0) its relative
    standard error. Raises :class:`InputError` naming the file and line.
    """
    out: list[CountryFactor] = []
    first: dict[str, int] = {}
    for line, row in _rows(path, ("country", "factor")):
        country = row["country"]
        if country not in table.countries and country not in (OTHER, ALL):
            raise InputError(f"{path}:{line}: country {country[:20]!r} is not in the MCC table "
                             f"(ISO 3166-1 alpha-2, or {OTHER!r} or {ALL!r})")
        if country in first:
            raise InputError(f"{path}:{line}: country {country} is listed twice (first on line "
                             f"{first[country]})")
        first[country] = line
        factor = _number(path, line, "factor", row["factor"])
        rse = _number(path, line, "rse", row["rse"]) if row.get("rse") else 0.0
        try:
            out.append(CountryFactor(country, factor, rse))
        except ValueError as exc:
            raise InputError(f"{path}:{line}: {exc}") from None
    return out
