"""Keyed 64-bit device keys: the engine never keeps a device pseudonym, only this hash of it.

``device_key = SipHash-2-4(k, operator || 0x1F || pseudonym)`` with the 128-bit key
``k = BLAKE2b-128(key=secret, "defacto device key")``. SipHash is a keyed pseudo-random function
made for short inputs; it is computed here for whole numpy columns at once (no per-ping or
per-device Python), which keeps keying off the hot path's critical share. Including the operator
keeps two operators' identical pseudonyms apart. The secret comes from configuration and can be
rotated: a new secret gives every device a new, unlinkable key (so device state restarts, see
the README). Key 0 is reserved by the device index as "empty", so a hash of 0 is mapped to 1.
"""

from __future__ import annotations

import hashlib
import os
import secrets

import numpy as np

SECRET_ENV = "DEFACTO_PSEUDONYM_KEY"
MIN_SECRET_BYTES = 16


def load_secret(path: str | None = None) -> tuple[bytes, str]:
    """Return (secret, where it came from): a key file, ``$DEFACTO_PSEUDONYM_KEY`` or a fresh one.

    A fresh random secret keeps nothing linkable across runs; figures do not depend on the
    secret (only device identity continuity across restarts does).
    """
    if path:
        with open(path, "rb") as fh:
            raw = fh.read().strip()
        source = f"key file {path}"
    elif os.environ.get(SECRET_ENV):
        raw = os.environ[SECRET_ENV].encode()
        source = f"${SECRET_ENV}"
    else:
        return secrets.token_bytes(32), "a random per-run key"
    if len(raw) < MIN_SECRET_BYTES:
        raise ValueError(f"pseudonymization key from {source} is shorter than {MIN_SECRET_BYTES} bytes")
    return raw[:64], source


_SIP_INIT = (0x736F6D6570736575, 0x646F72616E646F6D, 0x6C7967656E657261, 0x7465646279746573)


def _rotl(x: np.ndarray, b: int) -> np.ndarray:
    return (x << np.uint64(b)) | (x >> np.uint64(64 - b))


def _sip_rounds(v: list[np.ndarray], rounds: int) -> None:
    """SipRound ``rounds`` times on the four state columns, in place."""
    v0, v1, v2, v3 = v
    for _ in range(rounds):
        v0 += v1
        v1 = _rotl(v1, 13)
        v1 ^= v0
        v0 = _rotl(v0, 32)
        v2 += v3
        v3 = _rotl(v3, 16)
        v3 ^= v2
        v0 += v3
        v3 = _rotl(v3, 21)
        v3 ^= v0
        v2 += v1
        v1 = _rotl(v1, 17)
        v1 ^= v2
        v2 = _rotl(v2, 32)
    v[:] = [v0, v1, v2, v3]


def siphash24(key16: bytes, messages: np.ndarray) -> np.ndarray:
    """SipHash-2-4 (uint64) of every byte string in a ``|S`` array, under a 16-byte key.

    Vectorized over rows: each 8-byte block is one pass over the whole column, rows shorter
    than the block keep their state. Trailing NUL bytes are not part of a message (numpy's
    ``|S`` semantics).
    """
    if len(key16) != 16:
        raise ValueError("SipHash needs a 16-byte key")
    msgs = np.ascontiguousarray(np.asarray(messages, dtype=np.bytes_))
    n = len(msgs)
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    length = np.char.str_len(msgs).astype(np.uint64)
    full = (length // np.uint64(8)).astype(np.int64)
    blocks = int(full.max()) + 1
    width = msgs.dtype.itemsize
    raw = np.zeros((n, blocks * 8), dtype=np.uint8)
    raw[:, :width] = np.frombuffer(msgs.tobytes(), dtype=np.uint8).reshape(n, width)[:, :blocks * 8]
    words = raw.view("<u8")
    k0 = np.uint64(int.from_bytes(key16[:8], "little"))
    k1 = np.uint64(int.from_bytes(key16[8:], "little"))
    v = [np.full(n, np.uint64(_SIP_INIT[0]) ^ k0), np.full(n, np.uint64(_SIP_INIT[1]) ^ k1),
         np.full(n, np.uint64(_SIP_INIT[2]) ^ k0), np.full(n, np.uint64(_SIP_INIT[3]) ^ k1)]
    tail = (length & np.uint64(0xFF)) << np.uint64(56)
    with np.errstate(over="ignore"):
        for j in range(blocks):
            m = words[:, j].copy()
            last = full == j
            m[last] |= tail[last]
            active = full >= j
            before = [x.copy() for x in v] if not active.all() else None
            v[3] ^= m
            _sip_rounds(v, 2)
            v[0] ^= m
            if before is not None:
                for x, old in zip(v, before, strict=True):
                    x[~active] = old[~active]
        v[2] ^= np.uint64(0xFF)
        _sip_rounds(v, 4)
    return v[0] ^ v[1] ^ v[2] ^ v[3]


def device_key_secret(secret: bytes) -> bytes:
    """The 16-byte SipHash key derived from the configured secret."""
    return hashlib.blake2b(b"defacto device key", key=secret[:64], digest_size=16).digest()


def device_keys(operators: np.ndarray, devices: np.ndarray, secret: bytes) -> np.ndarray:
    """Keyed 64-bit hashes (uint64) of (operator, pseudonym) pairs, one per input row.

    Strings or UTF-8 bytes (numpy ``U``/``S``/object arrays) give the same keys.
    """
    if len(devices) == 0:
        return np.empty(0, dtype=np.uint64)
    ops, devs = np.asarray(operators), np.asarray(devices)
    if ops.dtype.kind != "S":
        ops = np.char.encode(ops.astype(str), "utf-8")
    if devs.dtype.kind != "S":
        devs = np.char.encode(devs.astype(str), "utf-8")
    # 0x1F (unit separator), not NUL: numpy strips trailing NULs from fixed-width strings
    pairs = np.char.add(ops, np.char.add(b"\x1f", devs))
    hashed = siphash24(device_key_secret(secret), pairs)
    hashed[hashed == 0] = 1
    return hashed
