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

Versions: 2 (this one). A blob without ``state_observed_from`` (written before warm-up was
tracked) is taken as observed since the oldest evidence its state holds
(:meth:`~estimators.engine.Engine.restore_state`). A blob without ``held_mcc`` (written before
foreign stays were wired) is restored with the held pings' home MCC unknown (they count as
domestic SIMs for the foreign stays; the engine's state without foreign stays starts them at the
next night). A version-1 blob (every ping of the open window held, the watermark the latest
ping's time) is still restored: its held pings before the next seal go into the engine and the
watermark's devices are rebuilt from the state.
"""

from __future__ import annotations

import hashlib
import io
import json
from typing import TYPE_CHECKING

import numpy as np

from estimators.engine import portable_state
from stream.decode.validate import PingBatch
from stream.estimate.fingerprint import Fingerprint, describe_difference

if TYPE_CHECKING:
    from stream.estimate.partition import PartitionState

CHECKPOINT_VERSION = 2
READABLE_VERSIONS = (1, 2)


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


def encode(arrays: dict[str, np.ndarray]) -> bytes:
    """The checkpoint blob (``.npz``) of :func:`capture`'s arrays (the engine state in portable
    terms: :func:`~estimators.engine.portable_state`); reads nothing else, so it may run in a
    thread."""
    out = {k: v for k, v in arrays.items() if not k.startswith(_CAPTURED)}
    state = portable_state({k[len(_CAPTURED):]: v for k, v in arrays.items()
                            if k.startswith(_CAPTURED)})
    out.update({f"state_{k}": v for k, v in state.items()})
    buf = io.BytesIO()
    np.savez(buf, **out)
    return buf.getvalue()


def write(ps: PartitionState, fingerprint: Fingerprint | None = None) -> bytes:
    """The checkpoint blob of a partition state; with ``fingerprint``, its tally parts (the
    settings that give the state its meaning) are recorded in the blob."""
    return encode(capture(ps, fingerprint))


def restore(ps: PartitionState, blob: bytes, fingerprint: Fingerprint | None = None) -> None:
    """Load a checkpoint blob into a fresh partition state.

    Raises ``ValueError`` for an unsupported version and :class:`CheckpointMismatchError` when
    the blob was written with other settings (``fingerprint``'s tally parts, when both it and
    the blob have them) or another key, naming the difference.
    """
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
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
        ps.engine.restore_state({k[6:]: z[k] for k in z.files if k.startswith("state_")})
        held_loc = ps.engine.cells.locate(  # older blobs: cells only, at their centres
            z["held_cell"], z["held_region"] if "held_region" in z.files else None)
        held_mcc = z["held_mcc"] if "held_mcc" in z.files else None  # older: all unknown
        held = PingBatch(z["held_key"], z["held_ts"], z["held_opclass"], held_loc,
                         home_mcc=held_mcc)
        top = (z["wm_key"], z["wm_ts"]) if "wm_key" in z.files else _latest_devices(ps, held)
    ps.windows.resume(meta["position"], held, top)
    ps.next_offset = int(meta["next_offset"])
    ps.closed_until = meta["closed_until"]


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
