"""Fuzzing the input decoders: Kafka message values of every encoding (JSON, Avro, batch frames,
control, CSV lines and arbitrary bytes, mixed in batches) and the records of ping files (JSON
objects, CSV rows with shifted columns, unparsable lines).

Whatever the input: no exception escapes, the decoder's peak allocation stays within
:data:`BYTES_PER_INPUT_BYTE` per input byte (plus a constant per message), and no identifier --
the device pseudonym, or a pseudonym / MSISDN / IMSI a feed puts in a renamed (``deviceId``,
``msisdn``) or shifted field -- appears in any reject: what the dead-letter topic (value and
headers) and the reject file receive. Bounded to a few seconds here;
``DEFACTO_FUZZ_EXAMPLES=20000`` raises the number of examples per test.
"""

from __future__ import annotations

import contextlib
import json
import os
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from estimators.engine import Engine, EngineConfig
from estimators.regions import regions_from_geojson
from estimators.units import HOUR_MS
from stream.contract import MAX_TEXT_BYTES, PING_FIELDS, Record, Reject
from stream.decode.frame import FRAME_MAGIC, decode_frame, encode_frame
from stream.decode.messages import decode_messages, encode_avro
from stream.decode.validate import PingDecoder

EXAMPLES = int(os.environ.get("DEFACTO_FUZZ_EXAMPLES", "100"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))

BYTES_PER_INPUT_BYTE = 48
"""Memory bound of :func:`decode_messages`, per byte of input: the widest ping row is 224 bytes
(device 128, cell 64, ts/lat/lon 24, operator 6, home_mcc 2) and the narrowest frame row 18;
Python's own JSON objects cost up to 24 bytes per byte (``[{},{},...]``)."""
BYTES_PER_MESSAGE = 1024
"""... plus this much per message (a reject, whatever the message's size) ..."""
FIXED_BYTES = 1 << 20
"""... plus this much per batch."""

T0 = 1_772_409_600_000
SECRET = b"fuzz-secret-0123456789abcdef0123"
CONTENT_TYPES = [None, "application/json", "application/vnd.defacto.ping+avro",
                 "application/x-defacto-frame", "text/plain"]
UNKNOWN_NAMES = ["deviceId", "msisdn", "imsi", "imei", "device_id", "subscriber", "DEVICE", "Device",
                 "user", "control"]

# identifiers: a pseudonym, an 11-digit MSISDN, a 13-digit number that is a valid ts of 2065+
TEXT_IDS = st.from_regex(r"PSEUDO[0-9A-F]{10}", fullmatch=True)
INT_IDS = st.one_of(st.integers(77_000_000_000, 77_099_999_999),
                    st.integers(3_000_000_000_000, 3_700_000_000_000))
VALID = {
    "ts": st.integers(T0, T0 + 10**6),
    "operator": st.sampled_from(["40101", "40177", "401011"]),
    "home_mcc": st.one_of(st.none(), st.integers(0, 999)),
    "cell": st.sampled_from(["c-1", "40101-1203-77"]),
    "lat": st.integers(-90_000, 90_000).map(lambda v: v / 1000),
    "lon": st.integers(-180_000, 180_000).map(lambda v: v / 1000),
}
ODD = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
                st.text(min_size=60, max_size=150), st.sampled_from(["\ud800", "a\udc00b", "", "²", "٤٠١٠١"]),
                st.lists(st.integers(), max_size=3),
                st.dictionaries(st.text(max_size=4), st.integers(), max_size=2))
ANY_IDS = st.one_of(TEXT_IDS, INT_IDS)


class Secrets:
    """The identifiers placed in an example: none may appear in any reject."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def draw(self, draw: Callable[[Any], Any], ids: st.SearchStrategy[Any] = ANY_IDS) -> Any:
        """An identifier (text or integer, or of ``ids``), remembered."""
        value = draw(ids)
        self.items.append(str(value))
        return value

    def assert_absent(self, rejects: list[Reject]) -> None:
        """Nothing of the rejects (dead-letter value and headers, reject file line) holds one."""
        for r in rejects:
            line = r.to_json()
            line.encode("utf-8")  # the reject file and the dead-letter topic can write it
            for s in self.items:
                assert s not in line, (s, line)
                assert s not in r.record and s not in r.detail and s not in r.source


@st.composite
def ping_objects(draw: Callable[[Any], Any], secrets: Secrets) -> dict[str, Any]:
    """A ping object as feeds get it wrong: any field absent, valid, odd or an identifier;
    identifiers also in renamed fields, nested, or as a field name."""
    obj: dict[str, Any] = {}
    for name in PING_FIELDS:
        kind = draw(st.sampled_from(["valid", "valid", "valid", "absent", "odd", "id"]))
        if name == "device" and kind == "valid":
            kind = "id"  # the device's own value is an identifier too
        if kind == "valid":
            obj[name] = draw(VALID[name])
        elif kind == "odd":
            obj[name] = draw(ODD)
        elif kind == "id":
            obj[name] = secrets.draw(draw)
    for _ in range(draw(st.integers(0, 3))):
        where = draw(st.sampled_from(["renamed", "nested", "as name", "random"]))
        if where == "renamed":
            obj[draw(st.sampled_from(UNKNOWN_NAMES))] = secrets.draw(draw)
        elif where == "nested":
            obj[draw(st.sampled_from(UNKNOWN_NAMES))] = {"id": secrets.draw(draw), "list": [secrets.draw(draw)]}
        elif where == "as name":
            obj[str(secrets.draw(draw))] = draw(VALID["ts"])
        else:
            obj[draw(st.text(max_size=10))] = draw(ODD)
    if draw(st.booleans()):  # a long text value somewhere else: costs its size, never shown
        obj["notes"] = "n" * draw(st.integers(0, 5000))
    return obj


@st.composite
def json_messages(draw: Callable[[Any], Any], secrets: Secrets) -> bytes:
    """A ping object as a JSON message, possibly with a BOM, cut short or with garbage after."""
    obj = draw(ping_objects(secrets))
    if draw(st.integers(0, 9)) == 0:
        obj = {"control": draw(st.sampled_from(["watermark", "pause"])),
               "ts_ms": draw(st.one_of(VALID["ts"], ODD)), "final": draw(ODD), "who": secrets.draw(draw)}
    text = json.dumps(obj, ensure_ascii=draw(st.booleans()))
    data = text.encode("utf-8", "surrogatepass")  # ensure_ascii=False + a lone surrogate: bad UTF-8
    mangle = draw(st.sampled_from(["none", "none", "none", "bom", "cut", "append"]))
    if mangle == "bom":
        data = b"\xef\xbb\xbf " + data
    elif mangle == "cut":
        data = data[:draw(st.integers(0, len(data)))]
    elif mangle == "append":
        data += draw(st.binary(max_size=20))
    return data


@st.composite
def avro_messages(draw: Callable[[Any], Any], secrets: Secrets) -> bytes:
    """An Avro ping (types right, values anything), possibly cut short or with a byte changed."""
    def maybe_id(valid: st.SearchStrategy[Any], ids: st.SearchStrategy[Any]) -> Any:
        return secrets.draw(draw, ids) if draw(st.booleans()) else draw(valid)

    ping = {
        "device": maybe_id(st.text(max_size=200), TEXT_IDS),
        "ts": maybe_id(st.one_of(VALID["ts"], st.integers(-(2**63), 2**63 - 1)), INT_IDS),
        "operator": maybe_id(st.one_of(VALID["operator"], st.text(max_size=8)), TEXT_IDS),
        "home_mcc": draw(st.one_of(VALID["home_mcc"], st.integers(-(2**31), 2**31 - 1))),
        "cell": maybe_id(st.one_of(st.none(), VALID["cell"], st.text(min_size=60, max_size=100)), TEXT_IDS),
        "lat": draw(st.one_of(st.none(), st.floats())),
        "lon": draw(st.one_of(st.none(), st.floats())),
    }
    try:
        data = encode_avro(ping, schema_id=draw(st.integers(0, 2**32 - 1)))
    except Exception:  # a lone surrogate cannot be written: send the bare header
        data = b"\x00\x00\x00\x00\x01"
    cut = draw(st.sampled_from(["none", "none", "cut", "flip"]))
    if cut == "cut":
        data = data[:draw(st.integers(0, len(data)))]
    elif cut == "flip" and len(data) > 5:
        b = bytearray(data)
        b[draw(st.integers(5, len(b) - 1))] = draw(st.integers(0, 255))
        data = bytes(b)
    return data


TEXT_DTYPES = ["|S1", "|S6", "|S64", "|S65", "|S128", "|S129", "|S2147483647", "|S99999999999", "<U4",
               "|V4294967295", "(1000000000,)i8", "O", "<i8", "<i2", "<f8", "i8," * 50, "|S0", "|b1"]


@st.composite
def raw_frames(draw: Callable[[Any], Any], secrets: Secrets) -> bytes:
    """A frame with a hand-made header: any row count, declared widths up to 2^31 and beyond,
    names and extra header keys holding identifiers; the body the right size or not."""
    n = draw(st.one_of(st.integers(0, 5), st.sampled_from([2**31, 10**18, -1]), st.just("12")))
    names = ["device", "ts", "operator", "home_mcc", "cell", "lat", "lon", "msisdn"]
    cols = []
    for name in draw(st.lists(st.sampled_from(names), max_size=8)):
        dtype = draw(st.one_of(st.sampled_from(TEXT_DTYPES), st.text(max_size=12)))
        cols.append({"name": name, "dtype": dtype})
    if draw(st.booleans()):
        cols.append({"name": str(secrets.draw(draw)), "dtype": "|S16"})
    header: dict[str, Any] = {"n": n, "columns": cols}
    if draw(st.booleans()):
        header["producer"] = secrets.draw(draw)
    head = json.dumps(header).encode()
    size = 0
    if isinstance(n, int) and 0 <= n <= 5:
        for c in cols:
            with contextlib.suppress(Exception):
                size += n * np.dtype(c["dtype"]).itemsize
    if size > 10_000 or draw(st.booleans()):
        size = draw(st.integers(0, 300))
    body = draw(st.sampled_from([b"\x00", b"P", b"\xff"])) * size
    hlen = len(head) if draw(st.integers(0, 5)) else draw(st.sampled_from([0, 2**31, 2**32 - 1]))
    return FRAME_MAGIC + hlen.to_bytes(4, "little") + head + body


@st.composite
def encoded_frames(draw: Callable[[Any], Any], secrets: Secrets) -> bytes:
    """A frame from the encoder with identifiers in ``device``, in ``cell`` and in an extra
    ``msisdn`` column, bad rows among good ones, possibly with bytes changed."""
    n = draw(st.integers(0, 12))
    odd = st.one_of(st.just(b""), st.just(b"\xff\xfe"), st.binary(max_size=8))
    dev = [draw(odd) if draw(st.integers(0, 3)) == 0 else str(secrets.draw(draw)).encode() for _ in range(n)]
    cells = [str(secrets.draw(draw)).encode() if draw(st.booleans()) else b"c-1" for _ in range(n)]
    cols = {
        "device": np.array(dev, dtype="S") if n else np.empty(0, dtype="S1"),
        "ts": np.array([secrets.draw(draw, INT_IDS) if draw(st.booleans()) else draw(VALID["ts"])
                        for _ in range(n)], dtype=np.int64),
        "operator": np.array([draw(st.sampled_from([b"40101", b"4010x", b"", b"401011"])) for _ in range(n)],
                             dtype="S6"),
        "home_mcc": np.array([draw(st.integers(-5, 1005)) for _ in range(n)], dtype=np.int16),
        "cell": np.array(cells, dtype="S") if n else np.empty(0, dtype="S1"),
        "msisdn": np.array([secrets.draw(draw, INT_IDS) for _ in range(n)], dtype=np.int64),
    }
    data = encode_frame(cols)
    if draw(st.integers(0, 3)) == 0 and len(data) > 8:
        b = bytearray(data)
        for _ in range(draw(st.integers(1, 4))):
            b[draw(st.integers(4, len(b) - 1))] = draw(st.integers(0, 255))
        data = bytes(b)
    return data


@st.composite
def sized_frames(draw: Callable[[Any], Any], secrets: Secrets) -> bytes:
    """A well-formed frame (the body as long as the header says) whose text columns declare
    any width: from 1 byte to 2^31 - 1 with no rows (fault case 03), or wider than the field
    with a few rows."""
    w_dev, w_cell = (draw(st.sampled_from([1, 16, 64, 65, 128, 129, 1000, 10**6, 2**31 - 1])) for _ in "dc")
    n = draw(st.integers(0, 3)) if max(w_dev, w_cell) <= 10_000 else 0
    cols = [("device", f"|S{w_dev}"), ("ts", "<i8"), ("operator", "|S6"), ("home_mcc", "<i2"),
            ("cell", f"|S{w_cell}")]
    head = json.dumps({"n": n, "columns": [{"name": a, "dtype": b} for a, b in cols]}).encode()
    body = b"".join(str(secrets.draw(draw)).encode()[:w_dev].ljust(w_dev, b"\0") for _ in range(n))
    body += np.full(n, T0, dtype="<i8").tobytes() + b"40101\0" * n + np.full(n, 401, dtype="<i2").tobytes()
    body += b"".join(b"c" * w_cell for _ in range(n))
    return FRAME_MAGIC + len(head).to_bytes(4, "little") + head + body


def fleet(secrets: Secrets, draw: Callable[[Any], Any]) -> list[bytes]:
    """Many good JSON pings: a long or wide value elsewhere in the batch must not widen their
    columns (fault case 04: one 900 KB cell id, 5,000 messages, a 4.3 GB column)."""
    base = draw(st.integers(0, 0xFFFFFF))
    devices = [f"PSEUDO{base:06X}{i:04X}" for i in range(draw(st.integers(20, 150)))]
    secrets.items.extend(devices)
    return [json.dumps({"device": d, "ts": T0 + i, "operator": "40101", "cell": "c-1"}).encode()
            for i, d in enumerate(devices)]


SPECIAL = [
    b"[" * 100_000,                                      # nesting
    b'{"device": "d", "ts": ' + b"9" * 5000 + b"}",      # a number of 5,000 digits
    b'{"device": "d", "ts": 1772409600000, "operator": "40101", "cell": "' + b"c" * 900_000 + b'"}',
    b'{"a": [' + b"{}," * 20_000 + b"{}]}",              # Python objects: the costliest JSON per byte
    b"\xef\xbb\xbf", b" \n", b"", b"DFB1", b"\x00",
]


@st.composite
def batches(draw: Callable[[Any], Any]) -> tuple[list[bytes], list[str | None] | None, Secrets]:
    """A batch of message values of every kind, content types, and the identifiers placed."""
    secrets = Secrets()
    values = []
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["json", "json", "json", "avro", "raw frame", "frame", "sized frame",
                                     "bytes", "csv", "special", "fleet"]))
        if kind == "json":
            values.append(draw(json_messages(secrets)))
        elif kind == "avro":
            values.append(draw(avro_messages(secrets)))
        elif kind == "raw frame":
            values.append(draw(raw_frames(secrets)))
        elif kind == "frame":
            values.append(draw(encoded_frames(secrets)))
        elif kind == "csv":  # a bad file row sent as it is by `defacto produce`
            values.append(f"{secrets.draw(draw)},{T0},40101,401,c-1".encode())
        elif kind == "sized frame":
            values.append(draw(sized_frames(secrets)))
        elif kind == "fleet":
            values.extend(fleet(secrets, draw))
        elif kind == "special":
            values.append(draw(st.sampled_from(SPECIAL)))
        else:
            prefix = draw(st.sampled_from([b"", FRAME_MAGIC, b"\x00\x00\x00\x00\x01", b"{", b"\xef\xbb\xbf{"]))
            values.append(prefix + draw(st.binary(max_size=200)))
    cts = draw(st.one_of(st.none(), st.lists(st.sampled_from(CONTENT_TYPES), min_size=len(values),
                                             max_size=len(values))))
    return values, cts, secrets


@pytest.fixture(scope="module", autouse=True)
def _warm() -> None:
    """Parse the Avro schema and load numpy's string routines before any memory is measured."""
    decode_messages([avro_messages_example(), b'{"device": "d"}', encode_frame(
        {"device": np.array([b"d"]), "ts": np.array([T0]), "operator": np.array([b"40101"]),
         "home_mcc": np.array([1]), "cell": np.array([b"c"])})])


def avro_messages_example() -> bytes:
    return encode_avro({"device": "d", "ts": T0, "operator": "40101", "home_mcc": None, "cell": "c",
                        "lat": None, "lon": None})


@FUZZ
@given(batch=batches())
def test_decode_messages_fuzz(batch: tuple[list[bytes], list[str | None] | None, Secrets]) -> None:
    values, cts, secrets = batch
    tracemalloc.start()
    try:
        dec = decode_messages(values, cts, source=lambda i: f"pings[0]@{i}")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    size = sum(len(v) for v in values)
    assert peak <= BYTES_PER_INPUT_BYTE * size + BYTES_PER_MESSAGE * len(values) + FIXED_BYTES, \
        (peak, size, len(values))
    # every message is accounted for: pings, a watermark, rejects, or a frame of no rows
    seen = ({int(r.source.rsplit("@", 1)[1]) for r in dec.rejects} | set(dec.source_rows.tolist())
            | {w[0] for w in dec.watermarks})
    for i in set(range(len(values))) - seen:
        assert len(decode_frame(values[i])["ts"]) == 0
    n = len(dec.source_rows)
    assert all(len(c) == n for c in dec.columns.values())
    for name, width in MAX_TEXT_BYTES.items():
        assert dec.columns[name].dtype.itemsize <= width
    secrets.assert_absent(dec.rejects)


# ---------------------------------------------------------------------------------------------- records


@pytest.fixture(scope="module")
def decoder() -> PingDecoder:
    ring = [[71.0, 50.9], [71.9, 50.9], [71.9, 51.4], [71.0, 51.4], [71.0, 50.9]]
    doc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"id": "astana", "name": "Astana"},
         "geometry": {"type": "Polygon", "coordinates": [ring]}}]}
    engine = Engine(regions_from_geojson(doc), EngineConfig(res=7))
    engine.load_cell_plan(["40101", "40101", "40177"], ["c-1", "40101-1203-77", "c-1"],
                          np.array([51.1, 51.2, 51.1]), np.array([71.4, 71.5, 71.4]))
    return PingDecoder(engine, SECRET, now_ms=T0 + HOUR_MS)


def _csv_typed(name: str, text: str) -> Any:
    """A CSV cell typed as the ping file reader does: empty is None, digits in ``ts`` and
    ``home_mcc`` are integers, ``lat``/``lon`` floats where they parse, else text."""
    if text == "":
        return None
    if name in ("ts", "home_mcc"):
        return int(text) if text.lstrip("-").isascii() and text.lstrip("-").isdigit() else text
    if name in ("lat", "lon"):
        try:
            return float(text)
        except ValueError:
            return text
    return text


@st.composite
def records(draw: Callable[[Any], Any]) -> tuple[list[Record], Secrets]:
    """File records: JSON ping objects, CSV rows whose columns do not match the header (the
    pseudonym lands in ts, cell, lat, ...), and lines that did not parse."""
    secrets = Secrets()
    out = []
    for line in range(draw(st.integers(1, 10))):
        kind = draw(st.sampled_from(["json", "csv", "csv", "unparsable"]))
        src = f"pings.csv:{line + 2}"
        if kind == "json":
            out.append(Record(src, draw(ping_objects(secrets)), "<not used>"))
        elif kind == "csv":
            row = [str(secrets.draw(draw)), str(draw(VALID["ts"])), draw(VALID["operator"]),
                   str(draw(st.integers(0, 999))), draw(st.sampled_from(["c-1", "", "zz"])),
                   draw(st.sampled_from(["51.1", ""])), draw(st.sampled_from(["71.4", ""]))]
            order = draw(st.permutations(range(len(row))))
            fields = {name: _csv_typed(name, row[j]) for name, j in zip(PING_FIELDS, order, strict=True)}
            out.append(Record(src, fields, ",".join(row[j] for j in order)))
        else:
            raw = f"{secrets.draw(draw)},{T0},40101"
            out.append(Record(src, None, raw, draw(st.sampled_from(["malformed JSON: Expecting value",
                                                                    "expected 7 columns, got 3"]))))
    return out, secrets


@FUZZ
@given(example=records())
def test_ping_decoder_records_fuzz(decoder: PingDecoder, example: tuple[list[Record], Secrets]) -> None:
    recs, secrets = example
    batch = decoder.decode(recs)
    assert len(batch) + len(batch.rejects) == len(recs)
    assert sorted(set(batch.row.tolist())) == batch.row.tolist()
    secrets.assert_absent(batch.rejects)
