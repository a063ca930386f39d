"""A partition's checkpoint: one ``.npz`` blob with everything needed to resume it exactly.

Contents: ``meta`` (JSON: version, topic, partition, next offset, window position, the settings
that give the state its meaning, an id of the pseudonymization key and, when the writer gives
one, the tally parts of the deployment's :class:`~stream.estimate.fingerprint.Fingerprint`),
the held pings (device keys, times, operator classes, H3 cells, home MCCs: only those after the
next window end or night close, so at most about ``--lateness`` of the stream), the devices
behind the watermark (``wm_key``, ``wm_ts``) and the engine's device state in portable terms
(H3 cells, operator names; evicted devices are not in it), with the engine's observation start
(``state_observed_from``: whether its figures are still warming up, :mod:`estimators.warmup`).
:func:`restore` refuses a blob written with another window length, lateness, watermark device
count, H3 resolution, key or fingerprint, naming the difference, rather than resuming into
wrong figures.

A checkpoint is written whole (a *base*) or as a *delta*: the device rows changed since the
base, with everything else in full (:func:`encode_checkpoint`, :mod:`~stream.estimate.checkpoint_delta`);
a delta is restored over its base (:func:`restore` with ``delta``). Each blob's stamps index a
location table of its own (the H3 cells and regions its rows use); merging a delta into its base
matches locations by (cell, region), so a worker that restarted (and numbers its locations anew)
goes on writing deltas against the base it resumed from.

Versions: 3 (this one: bases carry ``base_id``, deltas exist; a version-2 reader would take a
base without its delta, so it refuses version 3), 2 (before deltas). A blob without
``state_observed_from`` (written before warm-up was tracked) is taken as observed since the
oldest evidence its state holds (:meth:`~estimators.engine.Engine.restore_state`). A blob
without ``held_mcc`` (written before foreign stays were wired) is restored with the held pings'
home MCC unknown (they count as domestic SIMs for the foreign stays; the engine's state without
foreign stays starts them at the next night). A version-1 blob (every ping of the open window
held, the watermark the latest ping's time) is still restored: its held pings before the next
seal go into the engine and the watermark's devices are rebuilt from the state.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from estimators.engine import device_row_fields, portable_state
from estimators.presence import MAX_LOCATIONS
from stream.decode.validate import PingBatch
from stream.estimate.checkpoint_delta import (
    DELTA_ROWS,
    DeltaBase,
    apply_rows,
    base_of,
    changed_rows,
    device_digests,
    field_layout,
)
from stream.estimate.fingerprint import Fingerprint, describe_difference

if TYPE_CHECKING:
    from stream.estimate.partition import PartitionState

log = logging.getLogger("defacto.checkpoint")
CHECKPOINT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)


class CheckpointMismatchError(ValueError):
    """A checkpoint that this worker's configuration cannot resume from."""

    def __init__(self, why: str) -> None:
        super().__init__(f"cannot resume from the partition's checkpoint: {why}")


def key_id(secret: bytes) -> str:
    """A public id of the pseudonymization key (16 hex digits; the key cannot be derived)."""
    return hashlib.blake2b(b"defacto checkpoint key id", key=secret[:64], digest_size=8).hexdigest()


_CAPTURED = "captured_"


def capture(ps: PartitionState, fingerprint: Fingerprint | None = None) -> dict[str, np.ndarray]:
    """Everything a checkpoint of ``ps`` holds, as arrays the partition does not share (the
    engine's :meth:`~estimators.engine.Engine.capture_state` and copies of the held pings):
    ingest may go on while :func:`encode` turns them into the blob, e.g. in a thread. With
    ``fingerprint``, its tally parts (the settings that give the state its meaning) are
    recorded."""
    held = ps.windows.held() or PingBatch(
        np.zeros(0, np.uint64), np.zeros(0, np.int64), np.zeros(0, np.uint8), np.zeros(0, np.int64))
    meta = {
        "version": CHECKPOINT_VERSION, "topic": ps.topic, "partition": ps.partition,
        "next_offset": ps.next_offset, "closed_until": ps.closed_until,
        "position": ps.windows.position(),
        "every_ms": ps.settings.every_ms, "lateness_ms": ps.settings.lateness_ms,
        "watermark_devices": ps.settings.watermark_devices,
        "res": ps.engine.config.res, "key_id": ps.key_id,
    }
    if fingerprint is not None:
        meta["fingerprint"] = fingerprint.tally().to_json()
    wm_key, wm_ts = ps.windows.watermark_devices()
    arrays = {k: np.array(v, copy=True) for k, v in {
        "held_key": held.device_key, "held_ts": held.ts_ms, "held_opclass": held.opclass,
        "held_cell": ps.engine.cells.cell[held.loc], "held_mcc": held.home_mcc,
        "held_region": ps.engine.cells.region[held.loc], "wm_key": wm_key, "wm_ts": wm_ts,
    }.items()}
    return {"meta": np.array(json.dumps(meta)), **arrays,
            **{_CAPTURED + k: v for k, v in ps.engine.capture_state().items()}}


DELTA_MAX_SHARE = 0.5
"""A delta is written while at most this share of the device rows changed since the base;
past it, a new base (the delta would cost more than half of one)."""


@dataclass(frozen=True)
class EncodedCheckpoint:
    """A blob from :func:`encode_checkpoint`: a full checkpoint (``delta`` False, and ``base`` is
    this blob) or a delta against ``base``; ``rows``: the device rows it carries."""

    blob: bytes
    base: DeltaBase
    delta: bool
    rows: int


def encode_checkpoint(arrays: dict[str, np.ndarray], base: DeltaBase | None = None,
                      max_share: float = DELTA_MAX_SHARE) -> EncodedCheckpoint:
    """The checkpoint of :func:`capture`'s arrays: a delta against ``base`` (the last full
    checkpoint written of this partition by this process) when at most ``max_share`` of the
    device rows changed since, else a full one (:mod:`stream.estimate.checkpoint_delta`).
    Reads nothing else, so it may run in a thread."""
    meta = json.loads(str(arrays["meta"]))
    out = {k: v for k, v in arrays.items() if not k.startswith(_CAPTURED) and k != "meta"}
    state = portable_state({k[len(_CAPTURED):]: v for k, v in arrays.items()
                            if k.startswith(_CAPTURED)}, compact=False)
    fields = device_row_fields(state)
    layout = field_layout(state, fields)
    digests = device_digests(state, fields)
    n = len(state["key"])
    other = {f"state_{k}": v for k, v in state.items()
             if k not in fields and k not in ("stamp_cells", "stamp_regions")}
    out.update(other)
    if base is not None and base.layout == layout:
        rows = changed_rows(base, digests)
        if rows.size <= max_share * n:
            meta.update(kind="delta", base_id=base.id, rows=n, device_fields=fields)
            part = _own_locations({f: state[f][rows] for f in fields}, state)
            out.update({f"state_{k}": v for k, v in part.items()})
            out[DELTA_ROWS] = rows
            return EncodedCheckpoint(_npz(meta, out), base, True, int(rows.size))
    new = base_of(digests, layout)
    meta["base_id"] = new.id
    whole = _own_locations({f: state[f] for f in fields}, state)
    out.update({f"state_{k}": v for k, v in whole.items()})
    return EncodedCheckpoint(_npz(meta, out), new, False, n)


def _own_locations(rows: dict[str, np.ndarray], state: dict[str, np.ndarray]
                   ) -> dict[str, np.ndarray]:
    """``rows`` (device row arrays, ``stamp`` in the engine's location numbers) with ``stamp``
    renumbered into a table of just the locations they use (``stamp_cells``,
    ``stamp_regions``), as :func:`~estimators.engine.portable_state` does for a whole state."""
    out = dict(rows)
    mask = np.uint64(MAX_LOCATIONS)
    stamp = np.asarray(rows["stamp"], dtype=np.uint64)
    used, index = np.unique((stamp & mask).astype(np.int64), return_inverse=True)
    out["stamp"] = (stamp & ~mask) | index.reshape(-1).astype(np.uint64)
    out["stamp_cells"] = np.asarray(state["stamp_cells"])[used]
    out["stamp_regions"] = np.asarray(state["stamp_regions"])[used]
    return out


def encode(arrays: dict[str, np.ndarray]) -> bytes:
    """The full checkpoint blob (``.npz``) of :func:`capture`'s arrays (the engine state in
    portable terms: :func:`~estimators.engine.portable_state`); reads nothing else, so it may
    run in a thread."""
    return encode_checkpoint(arrays).blob


def _npz(meta: dict[str, object], arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, meta=np.array(json.dumps(meta)), **arrays)
    return buf.getvalue()


def _load(blob: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def with_delta(base: dict[str, np.ndarray], delta: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A full checkpoint's arrays from its base's and a delta's (:func:`encode_checkpoint`).
    Raises ``ValueError`` when the delta was not written against this base."""
    bmeta, dmeta = json.loads(str(base["meta"])), json.loads(str(delta["meta"]))
    if dmeta.get("kind") != "delta" or dmeta.get("base_id") != bmeta.get("base_id"):
        raise ValueError(f"checkpoint delta of base {dmeta.get('base_id')!r} does not belong to "
                         f"the stored base {bmeta.get('base_id')!r}")
    fields = [f"state_{f}" for f in dmeta["device_fields"]]
    rows, n = delta[DELTA_ROWS], int(dmeta["rows"])
    merged = apply_rows(base, rows, {f: delta[f] for f in fields if f != "state_stamp"}, n)
    # each blob's stamps index its own location table (a delta may come from a restarted
    # worker that numbers locations anew): locations are merged by (cell, region), as int64
    # numbers outside the stamp, and packed back once renumbered within MAX_LOCATIONS
    mask = np.uint64(MAX_LOCATIONS)
    bstamp = np.asarray(base["state_stamp"], dtype=np.uint64)
    dstamp = np.asarray(delta["state_stamp"], dtype=np.uint64)
    offset = len(base["state_stamp_cells"])
    parts = apply_rows(
        {"hi": bstamp & ~mask, "loc": (bstamp & mask).astype(np.int64)}, rows,
        {"hi": dstamp & ~mask, "loc": (dstamp & mask).astype(np.int64) + offset}, n)
    cells = np.concatenate([base["state_stamp_cells"], delta["state_stamp_cells"]]).astype(
        np.uint64)
    regions = np.concatenate([base["state_stamp_regions"], delta["state_stamp_regions"]]).astype(
        np.int64)
    used, index = np.unique(parts["loc"], return_inverse=True)
    pairs = np.rec.fromarrays([cells[used], regions[used]], names="cell,region")
    distinct, which = np.unique(pairs, return_inverse=True)
    if len(distinct) > MAX_LOCATIONS:
        raise ValueError(f"checkpoint delta: {len(distinct):,} locations in use, more than a "
                         f"partition holds ({MAX_LOCATIONS:,})")
    merged["state_stamp"] = parts["hi"] | which.reshape(-1)[index.reshape(-1)].astype(np.uint64)
    out = {k: v for k, v in delta.items() if k != DELTA_ROWS and k not in fields}
    out.update(merged)
    out["state_stamp_cells"] = np.asarray(distinct["cell"], dtype=np.uint64)
    out["state_stamp_regions"] = np.asarray(distinct["region"], dtype=np.int64)
    return out


def write(ps: PartitionState, fingerprint: Fingerprint | None = None) -> bytes:
    """The checkpoint blob of a partition state; with ``fingerprint``, its tally parts (the
    settings that give the state its meaning) are recorded in the blob."""
    return encode(capture(ps, fingerprint))


def restore(ps: PartitionState, blob: bytes, fingerprint: Fingerprint | None = None,
            delta: bytes | None = None) -> DeltaBase | None:
    """Load a checkpoint blob (with ``delta``: a base and the latest delta written against it)
    into a fresh partition state. Returns the stored base as a :class:`DeltaBase` (None for a
    blob written before deltas): the partition's next checkpoint may be a delta against it, as
    the restored engine keeps the blob's row order.

    Raises ``ValueError`` for an unsupported version or a delta of another base, and
    :class:`CheckpointMismatchError` when the blob was written with other settings
    (``fingerprint``'s tally parts, when both it and the blob have them) or another key, naming
    the difference.
    """
    z = _load(blob)
    base = _stored_base(z)
    if delta is not None and base is None:
        # a base written by a worker of an earlier version, which keeps no delta (and is newer
        # than any delta left beside it): the delta is not of it
        log.warning("partition %s: checkpoint base of an earlier version beside a delta: the "
                    "delta is ignored", ps.partition)
        delta = None
    if delta is not None:
        z = with_delta(z, _load(delta))
    meta = json.loads(str(z["meta"]))
    version = meta.get("version")
    if version not in READABLE_VERSIONS:
        raise ValueError(f"checkpoint version {version} is not supported")
    if (meta["every_ms"], meta["lateness_ms"]) != (ps.settings.every_ms, ps.settings.lateness_ms):
        raise CheckpointMismatchError("it was taken with another --every or --lateness")
    devices = meta.get("watermark_devices", ps.settings.watermark_devices)
    if devices != ps.settings.watermark_devices:
        raise CheckpointMismatchError(
            f"it was taken with a watermark of {devices} devices, not "
            f"{ps.settings.watermark_devices}")
    if meta["res"] != ps.engine.config.res:
        raise CheckpointMismatchError(f"it was taken at H3 resolution {meta['res']}")
    if meta["key_id"] != ps.key_id:
        raise CheckpointMismatchError(
            "it was taken with another pseudonymization key (after a key rotation, start "
            "with a new --prefix: state restarts)")
    if fingerprint is not None and "fingerprint" in meta:
        why = describe_difference(Fingerprint.from_json(meta["fingerprint"]),
                                  fingerprint.tally(), "in the checkpoint", "here")
        if why:
            raise CheckpointMismatchError(f"it was taken with other settings: {why}")
    ps.engine.restore_state({k[6:]: v for k, v in z.items() if k.startswith("state_")})
    held_loc = ps.engine.cells.locate(  # older blobs: cells only, at their centres
        z["held_cell"], z.get("held_region"))
    held = PingBatch(z["held_key"], z["held_ts"], z["held_opclass"], held_loc,
                     home_mcc=z.get("held_mcc"))  # older blobs: all home MCCs unknown
    top = (z["wm_key"], z["wm_ts"]) if "wm_key" in z else _latest_devices(ps, held)
    ps.windows.resume(meta["position"], held, top)
    ps.next_offset = int(meta["next_offset"])
    ps.closed_until = meta["closed_until"]
    return base


def _stored_base(arrays: dict[str, np.ndarray]) -> DeltaBase | None:
    """The :class:`DeltaBase` of a base blob's arrays (None: written before deltas)."""
    base_id = json.loads(str(arrays["meta"])).get("base_id")
    if base_id is None:
        return None
    state = {k[6:]: v for k, v in arrays.items() if k.startswith("state_")}
    fields = device_row_fields(state)
    return DeltaBase(base_id, device_digests(state, fields), field_layout(state, fields))


def _latest_devices(ps: PartitionState, held: PingBatch) -> tuple[np.ndarray, np.ndarray]:
    """The watermark's devices rebuilt from a restored state and its held pings (a version-1
    checkpoint): each device's latest accepted time is its stamp's or a held ping's."""
    st = ps.engine.state
    ts, _ = st.last_seen()
    keys = np.concatenate([st.index.keys[: st.n_devices], held.device_key])
    times = np.concatenate([ts, held.ts_ms])
    order = np.lexsort((times, keys))
    keys, times = keys[order], times[order]
    last = np.r_[keys[1:] != keys[:-1], True] if keys.size else np.zeros(0, dtype=bool)
    keys, times = keys[last], times[last]
    best = np.lexsort((keys, -times))[: ps.settings.watermark_devices]
    return keys[best], times[best]
