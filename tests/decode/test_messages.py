"""Kafka message encodings: batch frames, JSON, Avro and control messages, decoded in one batch."""

from __future__ import annotations

import json
import random
from typing import Any

import numpy as np
import pytest

from stream.contract import CodecError, check_ping
from stream.decode.frame import FRAME_MAGIC, decode_frame, encode_frame
from stream.decode.messages import decode_messages, encode_avro, encode_control, encode_json, sniff

T0 = 1_772_409_600_000  # 2026-03-02T00:00:00Z
OPS = ["40101", "40102", "40177", "401011"]
CT_FRAME, CT_AVRO, CT_JSON = ("application/x-defacto-frame", "application/vnd.defacto.ping+avro",
                              "application/json")


def _device(i: int) -> str:
    return f"a1b2c3{i:010x}"


def _cell_cols(n: int) -> dict[str, np.ndarray]:
    return {
        "device": np.array([_device(i) for i in range(n)]),
        "ts": T0 + np.arange(n, dtype=np.int64) * 1_000,
        "operator": np.array([OPS[i % len(OPS)] for i in range(n)]),
        "home_mcc": np.array([(401, 250, -1)[i % 3] for i in range(n)], dtype=np.int64),
        "cell": np.array([f"40101-1203-{i % 97}" for i in range(n)]),
    }


def _latlon_cols(n: int) -> dict[str, np.ndarray]:
    cols = _cell_cols(n)
    del cols["cell"]
    cols["lat"] = 51.1282 + np.arange(n) * 1e-4
    cols["lon"] = 71.4304 - np.arange(n) * 1e-4
    return cols


def _ping(i: int, **over: Any) -> dict[str, Any]:
    p: dict[str, Any] = {"device": _device(i), "ts": T0 + i, "operator": "40101", "home_mcc": 401,
                         "cell": "40101-1203-77"}
    p.update(over)
    return {k: v for k, v in p.items() if v is not ...}


def _assert_text(col: np.ndarray, expected: list[str]) -> None:
    assert col.dtype.kind == "S"
    assert [v.decode("utf-8") for v in col.tolist()] == expected


# ---------------------------------------------------------------------------------------------- frames


def test_frame_round_trip_cell_only() -> None:
    cols = _cell_cols(1000)
    data = encode_frame(cols)
    assert data[:4] == FRAME_MAGIC
    out = decode_frame(data)
    assert set(out) == {"device", "ts", "operator", "home_mcc", "cell"}
    _assert_text(out["device"], cols["device"].tolist())
    _assert_text(out["operator"], cols["operator"].tolist())
    _assert_text(out["cell"], cols["cell"].tolist())
    assert out["ts"].dtype == np.dtype("<i8") and np.array_equal(out["ts"], cols["ts"])
    assert out["home_mcc"].dtype == np.dtype("<i2") and np.array_equal(out["home_mcc"], cols["home_mcc"])
    assert out["operator"].dtype == np.dtype("S6")
    for arr in out.values():  # zero-copy views of the message
        assert not arr.flags.owndata and not arr.flags.writeable
    dec = decode_messages([data])
    assert dec.rejects == []
    for name in ("device", "ts", "operator", "home_mcc", "cell"):  # still views after decode_messages
        assert np.shares_memory(dec.columns[name], out[name]) or not dec.columns[name].flags.owndata


def test_frame_round_trip_latlon_only_and_alignment() -> None:
    cols = _latlon_cols(257)
    data = encode_frame(cols)
    out = decode_frame(data)
    assert "cell" not in out
    assert np.array_equal(out["lat"], cols["lat"]) and np.array_equal(out["lon"], cols["lon"])
    assert out["ts"].flags.aligned and out["lat"].flags.aligned
    dec = decode_messages([data])
    assert np.all(dec.columns["cell"] == b"")
    assert np.array_equal(dec.columns["lat"], cols["lat"])
    assert np.array_equal(dec.source_rows, np.zeros(257, dtype=np.int64))
    assert dec.rejects == [] and dec.watermarks == []


def test_frame_round_trip_mixed_location_and_unicode_devices() -> None:
    devices = ["a1b2c3d4", "Пётр-телефон", "設備-0001", "🙂" * 32, "x"]  # 🙂: 4 bytes, 32 = the 128-byte limit
    cols = {
        "device": np.array(devices, dtype=object),
        "ts": np.array([T0, T0 + 1, T0 + 2, T0 + 3, T0 + 4]),
        "operator": np.array([b"40101", b"40102", b"40177", b"401011", b"40101"]),
        "home_mcc": np.array([401, -1, 250, 401, 999]),
        "cell": np.array(["40101-1203-77", None, "", "c-7", "40101-9-1"], dtype=object),
        "lat": np.array([np.nan, 51.1282, 43.2389, np.nan, 51.0]),
        "lon": np.array([np.nan, 71.4304, 76.8897, np.nan, 71.0]),
    }
    data = encode_frame(cols)
    out = decode_frame(data)
    _assert_text(out["device"], devices)
    _assert_text(out["cell"], ["40101-1203-77", "", "", "c-7", "40101-9-1"])
    assert np.array_equal(out["lat"], cols["lat"], equal_nan=True)

    dec = decode_messages([data])
    assert dec.rejects == []
    _assert_text(dec.columns["device"], devices)
    # a cell wins over lat/lon, as in ping files: lat/lon are cleared on cell rows
    assert np.isnan(dec.columns["lat"][[0, 3, 4]]).all()
    assert np.array_equal(dec.columns["lat"][[1, 2]], [51.1282, 43.2389])


def test_frame_text_inputs_are_equivalent() -> None:
    base = _cell_cols(20)
    as_bytes = {k: (np.strings.encode(v, "utf-8") if v.dtype.kind == "U" else v) for k, v in base.items()}
    as_obj = {k: (v.astype(object) if v.dtype.kind == "U" else v) for k, v in base.items()}
    assert encode_frame(base) == encode_frame(as_bytes) == encode_frame(as_obj)


def test_frame_zero_rows() -> None:
    for cols in (_cell_cols(0), _latlon_cols(0)):
        out = decode_frame(encode_frame(cols))
        assert all(len(v) == 0 for v in out.values())
        dec = decode_messages([encode_frame(cols)])
        assert len(dec.source_rows) == 0 and dec.rejects == []
        assert set(dec.columns) == {"device", "ts", "operator", "home_mcc", "cell", "lat", "lon"}


def test_frame_home_mcc_defaults_to_unknown_and_extra_columns_are_ignored() -> None:
    cols = _cell_cols(5)
    del cols["home_mcc"]
    cols["signal_dbm"] = np.array([-71, -80, -95, -60, -101], dtype=np.int32)
    data = encode_frame(cols)
    assert b"signal_dbm" in data
    out = decode_frame(data)
    assert "signal_dbm" not in out
    assert np.all(out["home_mcc"] == -1)


def _raw_frame(header: dict[str, Any], body: bytes) -> bytes:
    h = json.dumps(header).encode()
    return FRAME_MAGIC + len(h).to_bytes(4, "little") + h + body


@pytest.mark.parametrize("cols_missing", [["device"], ["ts"], ["operator"], ["home_mcc"], ["cell"]])
def test_frame_missing_required_column(cols_missing: list[str]) -> None:
    cols = _cell_cols(3)
    n = 3
    keep = [(k, v) for k, v in cols.items() if k not in cols_missing]
    enc = {k: (np.strings.encode(v, "utf-8") if v.dtype.kind == "U" else v) for k, v in keep}
    dt = {"ts": "<i8", "home_mcc": "<i2", "operator": "|S6"}
    arrays = {k: v.astype(dt.get(k, v.dtype.str)) for k, v in enc.items()}
    data = _raw_frame({"n": n, "columns": [{"name": k, "dtype": a.dtype.str} for k, a in arrays.items()]},
                      b"".join(a.tobytes() for a in arrays.values()))
    with pytest.raises(CodecError) as err:
        decode_frame(data)
    assert err.value.reason == "bad_frame" and "missing" in err.value.detail


def test_frame_lat_without_lon_is_rejected() -> None:
    cols = _latlon_cols(2)
    del cols["lon"]
    with pytest.raises(CodecError):
        encode_frame(cols)
    lat = cols["lat"]
    data = encode_frame(_latlon_cols(2))
    header_len = int.from_bytes(data[4:8], "little")
    header = json.loads(data[8:8 + header_len])
    header["columns"] = [c for c in header["columns"] if c["name"] != "lon"]
    body = data[8 + header_len:]
    body = body[:32] + body[48:]  # ts, lat | lon cut out | rest
    assert np.array_equal(np.frombuffer(body[16:32], "<f8"), lat)
    with pytest.raises(CodecError, match="lon"):
        decode_frame(_raw_frame(header, body))


@pytest.mark.parametrize("bad_dtype", [("ts", "<i4"), ("ts", ">i8"), ("operator", "|S5"), ("home_mcc", "<i8"),
                                       ("device", "<U8"), ("lat", "<f4"), ("device", "|O"),
                                       ("signal", "|O"), ("signal", "not-a-dtype"), ("cell", "|S0")])
def test_frame_wrong_dtypes(bad_dtype: tuple[str, str]) -> None:
    name, dtype = bad_dtype
    data = encode_frame({**_latlon_cols(4), "cell": np.array(["a", "b", "c", "d"]),
                         "signal": np.zeros(4, dtype=np.int64)})
    header_len = int.from_bytes(data[4:8], "little")
    header = json.loads(data[8:8 + header_len])
    for c in header["columns"]:
        if c["name"] == name:
            c["dtype"] = dtype
    with pytest.raises(CodecError) as err:
        decode_frame(_raw_frame(header, data[8 + header_len:]))
    assert err.value.reason == "bad_frame"


def test_truncated_and_overlong_frames_are_rejects_not_exceptions() -> None:
    data = encode_frame(_cell_cols(50))
    end = len(data)
    cuts = sorted({0, 1, 3, 4, 5, 7, 8, 9, 20, end // 2, *range(end - 20, end)})
    values = [data[:c] for c in cuts] + [data + b"\x00", data + b"junk"]
    for v in values:
        if v[:4] == FRAME_MAGIC:
            with pytest.raises(CodecError):
                decode_frame(v)
    dec = decode_messages(values)
    assert len(dec.source_rows) == 0
    assert [int(r.source) for r in dec.rejects] == list(range(len(values)))
    assert {r.reason for r in dec.rejects} <= {"bad_frame", "empty_message", "unknown_encoding"}
    assert all(r.reason == "bad_frame" for r in dec.rejects if values[int(r.source)][:4] == FRAME_MAGIC)
    for r in dec.rejects:  # frame rejects never carry column bytes (devices)
        assert "a1b2c3" not in r.record and len(r.record) <= 2000


def test_frame_header_garbage() -> None:
    bad = [
        FRAME_MAGIC + (10).to_bytes(4, "little") + b"not json!!",
        FRAME_MAGIC + (2).to_bytes(4, "little") + b"[]",
        FRAME_MAGIC + (0xFFFFFFFF).to_bytes(4, "little") + b"{}",
        _raw_frame({"n": -1, "columns": []}, b""),
        _raw_frame({"n": True, "columns": []}, b""),
        _raw_frame({"n": 1, "columns": "device"}, b""),
        _raw_frame({"n": 1, "columns": [{"name": "ts"}]}, b""),
        _raw_frame({"n": 1, "columns": [{"name": "ts", "dtype": "<i8"}, {"name": "ts", "dtype": "<i8"}]},
                   b"\x00" * 16),
        _raw_frame({"n": 10**18, "columns": [{"name": "ts", "dtype": "<i8"}]}, b"\x00" * 8),
        FRAME_MAGIC + bytes([0xFF] * 4) + b"\x00",
    ]
    for v in bad:
        with pytest.raises(CodecError):
            decode_frame(v)
    dec = decode_messages(bad, [CT_FRAME] * len(bad))
    assert [r.reason for r in dec.rejects] == ["bad_frame"] * len(bad)


def test_random_garbage_never_raises() -> None:
    rng = random.Random(7)
    good = encode_frame(_cell_cols(30))
    values = []
    for _ in range(300):
        kind = rng.randrange(4)
        if kind == 0:  # flipped bytes in a real frame
            b = bytearray(good)
            for _ in range(rng.randrange(1, 6)):
                b[rng.randrange(len(b))] = rng.randrange(256)
            values.append(bytes(b))
        else:
            prefix = [FRAME_MAGIC, b"\x00\x00\x00\x00\x01", b"{"][kind - 1]
            values.append(prefix + rng.randbytes(rng.randrange(0, 80)))
    dec = decode_messages(values)
    rejected = {int(r.source) for r in dec.rejects}
    decoded = set(dec.source_rows.tolist())
    assert rejected | decoded == set(range(len(values)))
    assert len(dec.columns["ts"]) == len(dec.source_rows)


def test_frame_row_type_rules() -> None:
    devices = ["a1b2c3d4", "", "é" * 64, "é" * 63 + "\udc80", "ok-device", "ok2", "ok3", "ok4", "ok5", "ok6"]
    cols = {
        "device": np.array([d.encode("utf-8", "surrogateescape") for d in devices]),  # row 3: 0x80 alone
        "ts": np.full(10, T0),
        "operator": np.array(["40101"] * 4 + ["4010x", "4010", ""] + ["40101"] * 3),
        "home_mcc": np.array([401, 401, 401, 401, 401, 401, 401, 1000, 401, 401]),
        "cell": np.array(["", "c", "c", "c", "c", "c", "c", "c", "", ""]),
        "lat": np.array([51.0, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan, 51.0]),
        "lon": np.array([71.0, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan]),
    }
    data = bytearray(encode_frame(cols))
    dec = decode_messages([b"{}", bytes(data)])
    frame_rejects = [(r.reason, r.detail.split(":")[0]) for r in dec.rejects if int(r.source) == 1]
    assert frame_rejects == [("missing_device", "row 1"), ("bad_device", "row 3"), ("bad_operator", "row 4"),
                             ("bad_operator", "row 5"), ("missing_operator", "row 6"),
                             ("bad_home_mcc", "row 7"), ("missing_location", "row 8"),
                             ("bad_coordinates", "row 9")]
    _assert_text(dec.columns["device"], ["a1b2c3d4", "é" * 64])
    assert dec.source_rows.tolist() == [1, 1]
    for r in dec.rejects:
        assert "é" * 10 not in r.record
        if int(r.source) == 1:  # an empty device is shown as null, any other as <redacted>
            assert json.loads(r.record)["device"] == (None if r.reason == "missing_device" else "<redacted>")


def test_frame_invalid_utf8_device_and_cell() -> None:
    cols = {"device": np.array([b"a1b2", b"\xc3", b"\xff\xfe", b"\xc3\xa9ok"]),
            "ts": np.full(4, T0), "operator": np.array(["40101"] * 4), "home_mcc": np.full(4, 401),
            "cell": np.array([b"\xe2\x82", b"c1", b"c2", b"c3"])}
    dec = decode_messages([encode_frame(cols)])
    assert [(r.reason, r.detail.split(":")[0]) for r in dec.rejects] == [
        ("bad_cell", "row 0"), ("bad_device", "row 1"), ("bad_device", "row 2")]
    assert dec.columns["device"].tolist() == [b"\xc3\xa9ok"]


# ---------------------------------------------------------------------------------------------- JSON / Avro


def _json_pings() -> list[dict[str, Any]]:
    return [
        _ping(0),
        _ping(1, operator="40177", home_mcc=250, cell=..., lat=51.1282, lon=71.4304),
        _ping(2, home_mcc=None),
        _ping(3, home_mcc=..., cell="40102-88-1", operator="401011", device="Пётр-телефон"),
        _ping(4, cell=..., lat=43, lon=77),  # integer coordinates are numbers too
    ]


def _check_columns(dec: Any, pings: list[dict[str, Any]]) -> None:
    c = dec.columns
    _assert_text(c["device"], [p["device"] for p in pings])
    assert c["ts"].tolist() == [p["ts"] for p in pings]
    _assert_text(c["operator"], [p["operator"] for p in pings])
    assert c["home_mcc"].tolist() == [-1 if p.get("home_mcc") is None else p["home_mcc"] for p in pings]
    _assert_text(c["cell"], [p.get("cell") or "" for p in pings])
    lat = [np.nan if "cell" in p else p["lat"] for p in pings]
    assert np.array_equal(c["lat"], np.array(lat, dtype=float), equal_nan=True)


def test_json_round_trip() -> None:
    pings = _json_pings()
    values = [encode_json(p) for p in pings]
    assert json.loads(values[3]) == pings[3] and "Пётр".encode() in values[3]
    dec = decode_messages(values)
    assert dec.rejects == [] and dec.source_rows.tolist() == [0, 1, 2, 3, 4]
    _check_columns(dec, pings)
    # whitespace and a BOM before the object are fine
    dec2 = decode_messages([b"  \n" + values[0] + b"\n", b"\xef\xbb\xbf" + values[0]])
    assert dec2.rejects == [] and len(dec2.source_rows) == 2


def test_avro_round_trip() -> None:
    pings = _json_pings()
    values = [encode_avro(p, schema_id=42) for p in pings]
    assert values[0][:5] == b"\x00\x00\x00\x00\x2a"
    dec = decode_messages(values)
    assert dec.rejects == []
    _check_columns(dec, pings)
    assert dec.columns["ts"].dtype == np.int64


BAD_PINGS = [
    _ping(0, device=...),
    _ping(0, device=""),
    _ping(0, device="d" * 129),
    _ping(0, device=1234),
    _ping(0, ts=...),
    _ping(0, ts="1772409600000"),
    _ping(0, ts=1.7724096e12),
    _ping(0, ts=True),
    _ping(0, operator=...),
    _ping(0, operator=40101),
    _ping(0, operator="4010"),
    _ping(0, operator="40101a"),
    _ping(0, home_mcc="401"),
    _ping(0, home_mcc=1000),
    _ping(0, home_mcc=-1),
    _ping(0, cell=""),
    _ping(0, cell=17),
    _ping(0, cell=...),
    _ping(0, cell=..., lat=51.1),
    _ping(0, cell=..., lat="51.1", lon=71.4),
    _ping(0, cell=..., lat=True, lon=71.4),
]


def test_json_rejects_match_the_ping_file_rules() -> None:
    dec = decode_messages([encode_json(p) for p in BAD_PINGS])
    assert len(dec.source_rows) == 0
    assert [(int(r.source), r.reason, r.detail) for r in dec.rejects] == [
        (i, *check_ping(p)) for i, p in enumerate(BAD_PINGS)]  # type: ignore[misc]
    for r in dec.rejects:
        assert "a1b2c3" not in r.record and len(r.record) <= 2000


def test_avro_rejects_match_the_ping_file_rules() -> None:
    bad = [_ping(0, device=""), _ping(0, operator="4010x"), _ping(0, home_mcc=1000), _ping(0, cell=""),
           _ping(0, cell=...), _ping(0, cell=..., lon=71.0)]
    dec = decode_messages([encode_avro(p) for p in bad])
    assert [(r.reason, r.detail) for r in dec.rejects] == [check_ping(p) for p in bad]
    assert all(json.loads(r.record)["device"] == "<redacted>" for r in dec.rejects)


def test_json_values_that_do_not_fit_columns_are_rejected() -> None:
    values = [
        encode_json(_ping(0, ts=10**20)),
        encode_json(_ping(1, cell=..., lat=10**400, lon=71.0)),
        b'{"device": "a1b2\\ud800", "ts": 1772409600000, "operator": "40101", "cell": "c"}',
        encode_json(_ping(3, operator="٤٠١٠١")),
        encode_json(_ping(4)),
    ]
    dec = decode_messages(values)
    assert [(int(r.source), r.reason) for r in dec.rejects] == [(0, "ts_out_of_range"), (1, "bad_coordinates"),
                                                   (2, "bad_device"), (3, "bad_operator")]
    assert dec.source_rows.tolist() == [4]


def test_bad_avro_messages() -> None:
    good = encode_avro(_ping(0))
    values = [good[:4], good[:5], good[:-3], good + b"\x00", b"\x00\x00\x00\x00\x01" + b"\xff" * 20]
    dec = decode_messages(values, [CT_AVRO] * len(values))
    assert [r.reason for r in dec.rejects] == ["bad_avro"] * len(values)
    for r in dec.rejects:
        assert "a1b2c3" not in r.record
    with pytest.raises(CodecError):
        encode_avro({"device": "a1b2"})
    with pytest.raises(CodecError):
        encode_avro(_ping(0), schema_id=-1)


def test_bad_json_messages() -> None:
    values = [b'{"device": "a1b2c3d4e5", "ts": 17724', b"[1, 2]", b'"a1b2"', b"\xff{", b"{\xff}"]
    dec = decode_messages(values, [CT_JSON] * len(values))
    assert [r.reason for r in dec.rejects] == ["malformed_json", "not_a_ping_object", "not_a_ping_object",
                                           "malformed_json", "malformed_json"]
    assert all("a1b2" not in r.record for r in dec.rejects)  # unparsable text is described, not kept
    assert dec.rejects[0].record == "<unparsable message, 36 bytes; content not shown>"


# ---------------------------------------------------------------------------------------------- control


def test_control_messages() -> None:
    values = [encode_control(T0), encode_control(T0 + 60_000, final=True),
              b'{"control": "watermark", "ts_ms": 1772409600000}',
              b'{"ts_ms": 1772409600000, "control": "watermark", "final": false}',
              b'{"control": "pause"}', b'{"control": "watermark", "ts_ms": "soon"}',
              b'{"control": "watermark", "ts_ms": 1, "final": "yes"}']
    dec = decode_messages(values)
    assert dec.watermarks == [(0, T0, False), (1, T0 + 60_000, True), (2, T0, False), (3, T0, False)]
    assert [(int(r.source), r.reason) for r in dec.rejects] == [(4, "not_a_ping_object"), (5, "bad_watermark"),
                                                   (6, "bad_watermark")]
    assert json.loads(encode_control(5, True)) == {"control": "watermark", "ts_ms": 5, "final": True}
    with pytest.raises(CodecError):
        encode_control("5")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- mixed batch


def test_mixed_batch() -> None:
    frame_a = encode_frame(_cell_cols(3))
    frame_b = encode_frame(_latlon_cols(2))
    values = [
        encode_json(_ping(100)),                       # 0 -> row 0
        encode_avro(_ping(101, cell=..., lat=51.0, lon=71.0)),  # 1 -> row 1
        frame_a,                                       # 2 -> rows 2..4
        encode_control(T0 + 5_000),                    # 3 watermark
        b"\x89PNG\r\n",                                # 4 unknown_encoding
        encode_json(_ping(102, operator="4010")),      # 5 bad_operator
        b"",                                           # 6 empty_message
        encode_json(_ping(103)),                       # 7 -> row 5
        frame_b[:-1],                                  # 8 bad_frame
        frame_b,                                       # 9 -> rows 6..7
        b'{"device": "a1b2c3d4", oops',                # 10 malformed_json
        encode_avro(_ping(104))[:-2],                  # 11 bad_avro
        encode_control(T0 + 9_000, final=True),        # 12 watermark
    ]
    dec = decode_messages(values)
    assert dec.source_rows.tolist() == [0, 1, 2, 2, 2, 7, 9, 9]
    assert [(int(r.source), r.reason) for r in dec.rejects] == [(4, "unknown_encoding"), (5, "bad_operator"),
                                                   (6, "empty_message"), (8, "bad_frame"),
                                                   (10, "malformed_json"), (11, "bad_avro")]
    assert dec.watermarks == [(3, T0 + 5_000, False), (12, T0 + 9_000, True)]
    c = dec.columns
    assert set(c) == {"device", "ts", "operator", "home_mcc", "cell", "lat", "lon"}
    assert all(len(v) == 8 for v in c.values())
    _assert_text(c["device"], [_device(100), _device(101), _device(0), _device(1), _device(2), _device(103),
                               _device(0), _device(1)])
    assert c["ts"].tolist() == [T0 + 100, T0 + 101, T0, T0 + 1000, T0 + 2000, T0 + 103, T0, T0 + 1000]
    _assert_text(c["cell"], ["40101-1203-77", "", "40101-1203-0", "40101-1203-1", "40101-1203-2",
                             "40101-1203-77", "", ""])
    assert np.isnan(c["lat"][[0, 2, 3, 4, 5]]).all() and c["lat"][1] == 51.0
    assert c["home_mcc"].tolist() == [401, 401, 401, 250, -1, 401, 401, 250]
    for r in dec.rejects:
        assert "a1b2c3d4" not in r.record and len(r.record) <= 2000
    # content types say what sniffing would have guessed; a batch of nothing is empty
    cts = [CT_JSON, CT_AVRO, CT_FRAME, CT_JSON, None, "application/json; charset=utf-8", None, None, CT_FRAME,
           CT_FRAME, CT_JSON, CT_AVRO, "text/plain"]
    dec2 = decode_messages(values, cts)
    assert dec2.source_rows.tolist() == dec.source_rows.tolist()
    assert dec2.rejects == dec.rejects and dec2.watermarks == dec.watermarks
    empty = decode_messages([])
    assert len(empty.source_rows) == 0 and all(len(v) == 0 for v in empty.columns.values())
    with pytest.raises(ValueError):
        decode_messages(values, [None])


# ---------------------------------------------------------------------------------------------- sniff


def test_sniff_by_magic() -> None:
    assert sniff(encode_frame(_cell_cols(2))) == "frame"
    assert sniff(encode_avro(_ping(0))) == "avro"
    assert sniff(encode_json(_ping(0))) == "json"
    assert sniff(b'\n\t {"device": "a1b2c3d4"}') == "json"
    assert sniff(encode_control(T0)) == "control"
    assert sniff(b' { "control" : "watermark", "ts_ms": 1}') == "control"
    assert sniff(b'{"ts_ms": 1, "control": "watermark"}') == "json"  # decided when decoding
    for value, reason in [(b"", "empty_message"), (b"  \n", "empty_message"), (b"hello", "unknown_encoding"),
                          (b"[1]", "unknown_encoding"), (b"DFB", "unknown_encoding")]:
        with pytest.raises(CodecError) as err:
            sniff(value)
        assert err.value.reason == reason


def test_sniff_content_type_wins() -> None:
    frame = encode_frame(_cell_cols(2))
    assert sniff(b'{"a": 1}', CT_FRAME) == "frame"
    assert sniff(frame, CT_AVRO) == "avro"
    assert sniff(frame, CT_JSON) == "json"
    assert sniff(b"[1]", "Application/JSON; charset=utf-8") == "json"
    assert sniff(encode_control(1), CT_JSON) == "control"
    assert sniff(frame, "application/octet-stream") == "frame"  # unknown type: magic decides
    assert sniff(frame, None) == "frame"
    with pytest.raises(CodecError):
        sniff(b"", CT_JSON)
    dec = decode_messages([frame], [CT_JSON])
    assert [r.reason for r in dec.rejects] == ["malformed_json"]
