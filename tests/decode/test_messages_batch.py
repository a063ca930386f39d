"""The batch JSON path of :func:`decode_messages` decodes exactly as the per-message path:
same columns, same row → message map, same rejects (reason, detail, source, record), same
watermarks and encoding counts, whatever mix of good and bad messages a batch holds."""

from __future__ import annotations

import json
import random
from typing import Any

import numpy as np
import pytest

from stream.decode import messages
from stream.decode.frame import encode_frame
from stream.decode.messages import Decoded, decode_messages, encode_avro, encode_control, encode_json

T0 = 1_772_409_600_000  # 2026-03-02T00:00:00Z


def _ping(i: int) -> dict[str, Any]:
    p: dict[str, Any] = {"device": f"d{i:08x}", "ts": T0 + i * 37, "operator": "40101"}
    if i % 3:
        p["cell"] = f"40101-1203-{i % 97}"
    else:
        p["lat"], p["lon"] = 51.1 + (i % 100) * 1e-3, 71.4 - (i % 50) * 1e-3
    if i % 4 == 0:
        p["home_mcc"] = (401, 250, 0, 999)[i % 16 // 4]
    if i % 5 == 0:
        p["home_mcc"] = None
    if i % 11 == 0:
        p["extra"] = {"nested": [1, 2]}
    return p


BAD: list[bytes] = [
    b"{", b"{}", b'{"device": "a"}', b'{"device": "", "ts": 1772409600000, "operator": "40101", "cell": "c"}',
    b'{"device": "\\ud800", "ts": 1772409600000, "operator": "40101", "cell": "c"}',
    b'{"device": "a", "ts": true, "operator": "40101", "cell": "c"}',
    b'{"device": "a", "ts": 1.5, "operator": "40101", "cell": "c"}',
    b'{"device": "a", "ts": 99999999999999999999999, "operator": "40101", "cell": "c"}',
    b'{"device": "a", "ts": 5, "operator": "40101", "cell": "c"}',
    b'{"device": "a", "ts": 1772409600000, "operator": "4010", "cell": "c"}',
    b'{"device": "a", "ts": 1772409600000, "operator": "40a01", "cell": "c"}',
    b'{"device": "a", "ts": 1772409600000, "operator": 40101, "cell": "c"}',
    b'{"device": "a", "ts": 1772409600000, "operator": "\xd9\xa0\xd9\xa1\xd9\xa2\xd9\xa3\xd9\xa4", '
    b'"cell": "c"}',
    b'{"device": "a", "ts": 1772409600000, "operator": "40101", "home_mcc": -1, "cell": "c"}',
    b'{"device": "a", "ts": 1772409600000, "operator": "40101", "home_mcc": 1000, "cell": "c"}',
    b'{"device": "a", "ts": 1772409600000, "operator": "40101", "home_mcc": true, "cell": "c"}',
    b'{"device": "a", "ts": 1772409600000, "operator": "40101", "cell": ""}',
    b'{"device": "a", "ts": 1772409600000, "operator": "40101", "cell": 7}',
    b'{"device": "a", "ts": 1772409600000, "operator": "40101"}',
    b'{"device": "a", "ts": 1772409600000, "operator": "40101", "lat": 91, "lon": 1}',
    b'{"device": "a", "ts": 1772409600000, "operator": "40101", "lat": NaN, "lon": 1}',
    b'{"device": "a", "ts": 1772409600000, "operator": "40101", "lat": 1e999, "lon": 1}',
    b'{"device": "a", "ts": 1772409600000, "operator": "40101", "lat": "1", "lon": 1}',
    b'{"device": "a", "ts": 1772409600000, "operator": "40101", "lat": 1}',
    b'{"device": "' + b"x" * 129 + b'", "ts": 1772409600000, "operator": "40101", "cell": "c"}',
    b'{"device": "a", "ts": 1772409600000, "operator": "40101", "cell": "' + b"c" * 65 + b'"}',
    b'{"device": "\xc3\xa9' + b"x" * 127 + b'", "ts": 1772409600000, "operator": "40101", "cell": "c"}',
    b'{"device": "a", "ts": 1772409600000, "operator": "40101", "cell": "c"} trailing',
    b'{"device": "a", "ts": 1772409600000, "operator": "40101", "cell": "c"},{"device": "b"}',
    b'{"device": "a\xff", "ts": 1772409600000, "operator": "40101", "cell": "c"}',
    b'{"device": "a\\u0000", "ts": 1772409600000, "operator": "40101", "cell": "c"}',
    b'{"device": "a\\u0000b", "ts": 1772409600000, "operator": "40101", "cell": "c"}',
    b'{"control": "watermark", "ts_ms": 1772409600000}', b'{"control": "nope"}',
    b'{"ts": 1772409600000, "control": "watermark", "ts_ms": 1772409600000, "final": true}',
    b'{"device": "a", "ts": 1772409600000, "ts": 3, "operator": "40101", "cell": "c"}',
    b"", b"[1, 2]", b"\x00\x00\x00\x00\x01junk",
    # a valid ping longer than FAST_MAX_BYTES (an unknown field): decoded on its own
    b'{"device": "a", "ts": 1772409600000, "operator": "40101", "cell": "c", "pad": "'
    + b"x" * 5000 + b'"}',
]


def _per_message(monkeypatch: pytest.MonkeyPatch, values: list[bytes],
                 cts: list[str | None] | None = None) -> Decoded:
    with monkeypatch.context() as m:
        m.setattr(messages, "_fast_json", lambda values, idx: None)
        return decode_messages(values, cts, source=lambda i: f"m{i}")


def _assert_same(got: Decoded, want: Decoded) -> None:
    assert set(got.columns) == set(want.columns)
    for k, col in want.columns.items():
        assert got.columns[k].dtype == col.dtype, k
        np.testing.assert_array_equal(got.columns[k], col, err_msg=k)
    np.testing.assert_array_equal(got.source_rows, want.source_rows)
    assert [(r.source, r.reason, r.detail, r.record) for r in got.rejects] == \
        [(r.source, r.reason, r.detail, r.record) for r in want.rejects]
    assert got.watermarks == want.watermarks
    assert got.encodings == want.encodings


def test_good_json_batches_take_the_fast_path_and_equal_per_message(
        monkeypatch: pytest.MonkeyPatch) -> None:
    values = [encode_json(_ping(i)) for i in range(5000)]
    calls: list[int] = []
    fast = messages._fast_json
    monkeypatch.setattr(messages, "_fast_json", lambda v, idx: calls.append(len(idx)) or fast(v, idx))
    got = decode_messages(values, source=lambda i: f"m{i}")
    assert calls == [messages.FAST_CHUNK, messages.FAST_CHUNK, 5000 - 2 * messages.FAST_CHUNK]
    assert len(got.source_rows) == 5000 and not got.rejects
    _assert_same(got, _per_message(monkeypatch, values))
    # lat/lon rows keep their coordinates, cell rows NaN; home_mcc -1 where absent or null
    assert np.isnan(got.columns["lat"][1]) and got.columns["lat"][0] == pytest.approx(51.1)
    assert got.columns["home_mcc"].tolist()[:6] == [-1, -1, -1, -1, 250, -1]


@pytest.mark.parametrize("bad", range(len(BAD)))
def test_each_bad_message_in_a_batch_gives_the_per_message_reject(
        monkeypatch: pytest.MonkeyPatch, bad: int) -> None:
    values = [encode_json(_ping(i)) for i in range(30)]
    values.insert(17, BAD[bad])
    _assert_same(decode_messages(values, source=lambda i: f"m{i}"), _per_message(monkeypatch, values))


def test_random_mixes_of_encodings_equal_per_message(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(14)
    frame = encode_frame({"device": np.array(["f1", "f2"]), "ts": np.array([T0, T0 + 1]),
                          "operator": np.array(["40101", "40102"]),
                          "cell": np.array(["c1", "c2"])})
    for trial in range(40):
        values: list[bytes] = []
        cts: list[str | None] = []
        for i in range(rng.randrange(1, 300)):
            roll = rng.random()
            if roll < 0.8:
                v, ct = encode_json(_ping(trial * 1000 + i)), None
            elif roll < 0.9:
                v, ct = rng.choice(BAD), None
            elif roll < 0.93:
                v, ct = frame, None
            elif roll < 0.96:
                v, ct = encode_avro(_ping(i)), None
            elif roll < 0.98:
                v, ct = encode_control(T0 + i), None
            else:
                v, ct = encode_json(_ping(i)), rng.choice(["application/json",
                                                           "application/json; charset=utf-8"])
            values.append(v)
            cts.append(ct)
        use_cts = cts if any(cts) else None
        got = decode_messages(values, use_cts, source=lambda i: f"m{i}")
        _assert_same(got, _per_message(monkeypatch, values, use_cts))


def test_a_batch_split_by_a_watermark_keeps_row_order(monkeypatch: pytest.MonkeyPatch) -> None:
    values = [encode_json(_ping(i)) for i in range(10)] + [encode_control(T0 + 5)] + \
        [encode_json(_ping(i)) for i in range(10, 20)]
    got = decode_messages(values)
    assert got.watermarks == [(10, T0 + 5, False)]
    assert got.source_rows.tolist() == [*range(10), *range(11, 21)]
    assert got.encodings == {"json": 20, "control": 1}
    _assert_same(got, _per_message(monkeypatch, values))


def test_watermarks_between_pings_leave_the_pings_on_the_fast_path(
        monkeypatch: pytest.MonkeyPatch) -> None:
    values: list[bytes] = []
    for i in range(3000):
        values.append(encode_json(_ping(i)))
        if i % 100 == 99:  # a watermark every 100 pings, as producers send them
            values.append(encode_control(T0 + i))
    calls: list[int] = []
    fast = messages._fast_json
    monkeypatch.setattr(messages, "_fast_json", lambda v, idx: calls.append(len(idx)) or fast(v, idx))
    got = decode_messages(values, source=lambda i: f"m{i}")
    assert sum(calls) == 3000 and len(calls) == 30  # every ping, in the runs between watermarks
    assert len(got.watermarks) == 30 and got.encodings == {"json": 3000, "control": 30}
    _assert_same(got, _per_message(monkeypatch, values))


def test_the_fast_path_refuses_what_check_ping_refuses() -> None:
    for raw in BAD[:-1]:
        assert messages._fast_json([raw], [0]) is None, raw
    ok = json.dumps({"device": "é" * 64, "ts": T0, "operator": "401011", "cell": "c"}).encode()
    assert messages._fast_json([ok], [0]) is not None


def test_whole_batch_scan_agrees_with_the_per_message_scan() -> None:
    """``_all_plain_json`` says yes exactly when every message would join the fast-path run."""
    ping = encode_json(_ping(1))
    plain = [ping] * 5
    cases: list[tuple[list[bytes], list[str | None] | None, bool]] = [
        (plain, None, True),
        (plain, ["application/json"] * 5, True),
        (plain, [None, None, "application/x-defacto-frame", None, None], False),
        ([*plain, b""], None, False),
        ([*plain, b" " + ping], None, False),
        ([*plain, encode_control(5, final=False)], None, False),
        ([*plain, b'{"device": {"control": 1}}'], None, False),
        ([*plain, b"{" + b" " * messages.FAST_MAX_BYTES + b"}"], None, False),
        ([*plain, b"{" + b" " * (messages.FAST_MAX_BYTES - 2) + b"}"], None, True),
        ([b'{"a": "con', b'{trol"}'], None, True),
        ([], None, False),
    ]
    for values, cts, want in cases:
        assert messages._all_plain_json(values, cts) is want, (values[-1:], cts)


def test_a_device_ending_in_nul_is_rejected_not_merged_with_its_twin(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """As fixed-width bytes ``a\\0`` would be ``a``: another device's id. It is a bad device;
    a NUL inside an id keeps it apart and is accepted."""
    values = [encode_json({"device": d, "ts": T0, "operator": "40101", "cell": "c"})
              for d in ("a", "a\x00", "a\x00b")]
    got = decode_messages(values, source=lambda i: f"m{i}")
    assert [(r.source, r.reason) for r in got.rejects] == [("m1", "bad_device")]
    assert got.columns["device"].tolist() == [b"a", b"a\x00b"]
    _assert_same(got, _per_message(monkeypatch, values))
