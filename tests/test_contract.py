"""The ping contract: text limits, text that is not text, what a reject may show, the schema files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from stream.contract import (
    MAX_CELL_BYTES,
    MAX_DEVICE_BYTES,
    MAX_TEXT_BYTES,
    MAX_TS_MS,
    MIN_TS_MS,
    REJECT_REASONS,
    Reject,
    check_ping,
    describe,
    redacted,
    unparsable,
)

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"
T0 = 1_772_409_600_000  # 2026-03-02T00:00:00Z
NOW = T0 + 3_600_000
GOOD = {"device": "a3f9c01d", "ts": T0, "operator": "40101", "home_mcc": 401, "cell": "40101-1203-77"}


def _with(**over: Any) -> dict[str, Any]:
    return {k: v for k, v in {**GOOD, **over}.items() if v is not ...}


def _reason(ping: dict[str, Any]) -> str | None:
    bad = check_ping(ping)
    return bad[0] if bad else None


@pytest.mark.parametrize(("field", "value", "reason"), [
    ("device", "x" * 128, None),
    ("device", "x" * 129, "bad_device"),
    ("device", "é" * 64, None),             # 128 bytes of UTF-8
    ("device", "é" * 65, "bad_device"),     # 65 characters, 130 bytes
    ("device", "🙂" * 33, "bad_device"),    # 33 characters, 132 bytes
    ("device", "", "bad_device"),
    ("cell", "c" * 64, None),
    ("cell", "c" * 65, "bad_cell"),
    ("cell", "ячейка-" * 5 + "1", "bad_cell"),  # 36 characters, 71 bytes
    ("cell", "c" * 900_000, "bad_cell"),   # fault case 04
    ("cell", "", "bad_cell"),
    ("operator", "4010123", "bad_operator"),
])
def test_text_fields_have_a_length_limit_in_utf8_bytes(field: str, value: str, reason: str | None) -> None:
    assert _reason(_with(**{field: value})) == reason
    assert MAX_TEXT_BYTES == {"device": MAX_DEVICE_BYTES, "cell": MAX_CELL_BYTES, "operator": 6}


@pytest.mark.parametrize(("field", "value", "reason"), [
    ("device", "\ud800", "bad_device"),        # fault case 05: valid JSON, not encodable
    ("device", "a1b2\udfff", "bad_device"),
    ("cell", "\udc00", "bad_cell"),
    ("cell", "c-\ud83d", "bad_cell"),          # half of a surrogate pair
    ("operator", "4010\ud800", "bad_operator"),
    ("operator", "٤٠١٠١", "bad_operator"),     # Arabic-Indic digits are digits, not ASCII
])
def test_text_that_is_not_text_is_rejected_per_field(field: str, value: str, reason: str) -> None:
    bad = check_ping(_with(**{field: value}))
    assert bad is not None and bad[0] == reason
    assert "valid Unicode" in bad[1] or field == "operator"
    # a lone surrogate in an unknown field is ignored like the field, and never shown
    assert check_ping(_with(note="\ud800")) is None
    redacted(_with(note="\ud800", cell="\udc00")).encode("utf-8")


def test_details_name_the_kind_of_value_never_the_value() -> None:
    token = "PSEUDO-0004"
    cases = [_with(device=token * 20), _with(ts=token), _with(ts=77012345678), _with(operator=token),
             _with(home_mcc=token), _with(home_mcc=77012345678), _with(cell=token * 10), _with(cell=[token])]
    for ping in cases:
        bad = check_ping(ping)
        assert bad is not None and bad[1].startswith(REJECT_REASONS[bad[0]])
        assert token not in bad[1] and "77012345678" not in bad[1]
    assert check_ping(_with(ts=1_772_409_600))[1].endswith(  # seconds, not ms
        "got <integer, 10 digits>: seconds since 1970? defacto reads milliseconds (multiply by "
        "1000)")
    assert check_ping(_with(ts="PSEUDO-0004"))[1].endswith("got <text, 11 characters>")


@pytest.mark.parametrize(("fields", "reason", "detail"), [
    ({"lat": 51.1, "lng": 71.4}, "bad_coordinates",
     "lat and lon must both be given: lon is missing; a 'lng' field? defacto reads 'lon'"),
    ({"lon": 71.4}, "bad_coordinates", "lat and lon must both be given: lat is missing"),
    ({"latitude": 51.1, "longitude": 71.4}, "missing_location",
     "neither cell nor lat/lon; a 'longitude' field? defacto reads 'lon'"),
    ({"cell_id": "A"}, "missing_location", "neither cell nor lat/lon; a 'cell_id' field? defacto "
     "reads 'cell'"),
    ({"lat": "51,1", "lon": 71.4}, "bad_coordinates",
     "lat must be a number, got <text, 4 characters>; a decimal comma? defacto reads a point"),
    ({"lat": 51.1, "lon": "east"}, "bad_coordinates", "lon must be a number, got <text, 4 characters>"),
    ({"lat": 91.0, "lon": 71.4}, "bad_coordinates", REJECT_REASONS["bad_coordinates"]),
])
def test_a_location_reject_says_which_field_and_the_usual_other_names(
        fields: dict, reason: str, detail: str) -> None:
    ping = {k: v for k, v in _with().items() if k not in ("cell", "lat", "lon")}
    assert check_ping({**ping, **fields}) == (reason, detail)


def test_describe() -> None:
    assert [describe(v) for v in [None, True, -5, 1.5, float("nan"), "ab", "éa", "\ud800", b"\xff",
                                  [1, 2], {"a": 1}, 10**5000]] == [
        "<null>", "<true>", "<negative integer, 1 digits>", "<number>", "<number, not finite>",
        "<text, 2 characters>", "<text, 2 characters, 3 bytes of UTF-8>", "<text, not valid Unicode>",
        "<1 bytes, not UTF-8>", "<list, 2 items>", "<object, 1 fields>", "<integer, over 3000 digits>"]


def test_redacted_keeps_only_allow_listed_values() -> None:
    # fault case 11: the pseudonym under another name
    rec = json.loads(redacted({"deviceId": "PSEUDO-0001", "ts": T0, "operator": "40101", "home_mcc": 401,
                               "cell": "c-1", "msisdn": 77012345678, "imsi": "401011234567890"}, now_ms=NOW))
    assert rec == {"ts": T0, "operator": "40101", "home_mcc": 401, "cell": "<text, 3 characters>",
                   "other_fields": ["deviceId", "msisdn", "imsi"]}
    # a shifted CSV row: the pseudonym in ts, the ts in device
    rec = json.loads(redacted({"device": str(T0), "ts": "PSEUDO-0004", "operator": "40101", "home_mcc": None,
                               "cell": None, "lat": 51.1, "lon": 71.4}, now_ms=NOW))
    assert rec == {"device": "<redacted>", "ts": "<text, 11 characters>", "operator": "40101",
                   "home_mcc": None, "cell": None, "lat": 51.1, "lon": 71.4}
    # a cell is text that may be a pseudonym (device and cell columns swapped): shown only where
    # the cell plan knows it; a ts far ahead may be a 13-digit phone number
    assert json.loads(redacted(_with(cell="PSEUDO-0005"), now_ms=NOW))["cell"] == "<text, 11 characters>"
    assert json.loads(redacted(_with(), known_cell=True, now_ms=NOW))["cell"] == "40101-1203-77"
    assert json.loads(redacted(_with(ts=2348012345678), now_ms=NOW))["ts"] == "<integer, 13 digits>"
    assert json.loads(redacted(_with(ts=MIN_TS_MS - 1), now_ms=NOW))["ts"] == "<integer, 13 digits>"
    assert json.loads(redacted(_with(lat=77012345678.0, lon=1), now_ms=NOW))["lat"] == "<number>"
    assert json.loads(redacted(_with(device=None), now_ms=NOW))["device"] is None
    # names that could be data are counted, not shown; at most 10 names
    rec = json.loads(redacted({"PSEUDO0001": 1, "a3f9 c01d": 2, **{f"extra_{c}": 0 for c in "abcdefghijkl"}}))
    assert rec["other_fields"][:10] == [f"extra_{c}" for c in "abcdefghij"]
    assert rec["other_fields"][10] == "<4 more, names not shown>"
    assert len(redacted({f"k{i}": "v" * 1000 for i in range(10_000)})) < 200


def test_unparsable_and_reject_lines() -> None:
    assert unparsable("row", 57) == "<unparsable row, 57 bytes; content not shown>"
    r = Reject("pings-\udcff.jsonl:3", "bad_cell", "d", "{}")  # a file name that is not UTF-8
    assert json.loads(r.to_json())["source"] == "pings-\udcff.jsonl:3"
    r.to_json().encode("utf-8")
    assert "é" in Reject("é.jsonl:1", "bad_ts", "", "").to_json()  # readable where it can be


def test_schema_files_state_the_limits() -> None:
    schema = json.loads((SCHEMAS / "ping.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    props = schema["properties"]
    assert props["device"]["maxLength"] == MAX_DEVICE_BYTES and props["cell"]["maxLength"] == MAX_CELL_BYTES
    assert props["operator"]["maxLength"] == 6
    assert (props["ts"]["minimum"], props["ts"]["maximum"]) == (MIN_TS_MS, MAX_TS_MS)
    for name, p in props.items():
        for code in p["x-reject"].split(" / "):
            assert code in REJECT_REASONS, name
    validator = jsonschema.Draft202012Validator(schema)
    assert validator.is_valid(GOOD) and check_ping(GOOD) is None
    for bad in [_with(cell="c" * 65), _with(device="x" * 129), _with(ts=MAX_TS_MS + 1),
                _with(cell=None), _with(cell=None, lat=91.0, lon=0.0),
                _with(cell=None, lat="51", lon=71.0)]:
        assert not validator.is_valid(bad) and check_ping(bad) is not None, bad
    # the location rule as check_ping applies it: a cell wins; a null cell falls back to lat/lon
    for good in [_with(lat=51.1, lon=71.4), _with(lat="not read", lon=None),
                 _with(cell=None, lat=51.1, lon=71.4)]:
        assert validator.is_valid(good) and check_ping(good) is None, good
    avsc = {f["name"]: f["doc"] for f in json.loads((SCHEMAS / "ping.avsc").read_text())["fields"]}
    assert f"1..{MAX_DEVICE_BYTES} bytes of UTF-8" in avsc["device"]
    assert f"1..{MAX_CELL_BYTES} bytes of UTF-8" in avsc["cell"]
