"""A partition's checkpoint: one ``.npz`` blob with everything needed to resume it exactly.

Contents: ``meta`` (JSON: version, topic, partition, next offset, window position, the settings
that give the state its meaning, and an id of the pseudonymization key), the held pings (device
keys, times, operator classes, H3 cells) and the engine's device state in portable terms (H3
cells, operator names). :func:`restore` refuses a blob written with another window length,
lateness, H3 resolution or key, naming the difference, rather than resuming into wrong figures.
"""

from __future__ import annotations

import hashlib
import io
import json
from typing import TYPE_CHECKING

import numpy as np

from stream.decode.validate import PingBatch

if TYPE_CHECKING:
    from stream.estimate.partition import PartitionState

CHECKPOINT_VERSION = 1


class CheckpointMismatchError(ValueError):
    """A checkpoint that this worker's configuration cannot resume from."""

    def __init__(self, why: str) -> None:
        super().__init__(f"cannot resume from the partition's checkpoint: {why}")


def key_id(secret: bytes) -> str:
    """A public id of the pseudonymization key (16 hex digits; the key cannot be derived)."""
    return hashlib.blake2b(b"defacto checkpoint key id", key=secret[:64], digest_size=8).hexdigest()


def write(ps: PartitionState) -> bytes:
    """The checkpoint blob of a partition state."""
    held = ps.windows.held() or PingBatch(
        np.zeros(0, np.uint64), np.zeros(0, np.int64), np.zeros(0, np.uint8), np.zeros(0, np.int64))
    meta = {
        "version": CHECKPOINT_VERSION, "topic": ps.topic, "partition": ps.partition,
        "next_offset": ps.next_offset, "closed_until": ps.closed_until,
        "position": ps.windows.position(),
        "every_ms": ps.settings.every_ms, "lateness_ms": ps.settings.lateness_ms,
        "res": ps.engine.config.res, "key_id": ps.key_id,
    }
    state = ps.engine.export_state()
    buf = io.BytesIO()
    np.savez(buf, meta=np.array(json.dumps(meta)),
             held_key=held.device_key, held_ts=held.ts_ms, held_opclass=held.opclass,
             held_cell=ps.engine.cells.cell[held.loc],
             **{f"state_{k}": v for k, v in state.items()})
    return buf.getvalue()


def restore(ps: PartitionState, blob: bytes) -> None:
    """Load a checkpoint blob into a fresh partition state.

    Raises ``ValueError`` for an unsupported version and :class:`CheckpointMismatchError` when
    the blob was written with other settings or another key.
    """
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        if meta.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"checkpoint version {meta.get('version')} is not supported")
        if (meta["every_ms"], meta["lateness_ms"]) != (ps.settings.every_ms, ps.settings.lateness_ms):
            raise CheckpointMismatchError("it was taken with another --every or --lateness")
        if meta["res"] != ps.engine.config.res:
            raise CheckpointMismatchError(f"it was taken at H3 resolution {meta['res']}")
        if meta["key_id"] != ps.key_id:
            raise CheckpointMismatchError(
                "it was taken with another pseudonymization key (after a key rotation, start "
                "with a new --prefix: state restarts)")
        ps.engine.restore_state({k[6:]: z[k] for k in z.files if k.startswith("state_")})
        held_loc = ps.engine.cells.locate(z["held_cell"])
        held = PingBatch(z["held_key"], z["held_ts"], z["held_opclass"], held_loc,
                         row=np.zeros(len(held_loc), np.int64))
    ps.windows.resume(meta["position"], held)
    ps.next_offset = int(meta["next_offset"])
    ps.closed_until = meta["closed_until"]
