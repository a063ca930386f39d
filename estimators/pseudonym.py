"""Keyed 64-bit device keys: the engine never keeps a device pseudonym, only this hash of it.

``device_key = BLAKE2b-64(key=secret, operator || 0x1F || pseudonym)``. Including the operator
keeps two operators' identical pseudonyms apart. The secret comes from configuration and can be
rotated: a new secret gives every device a new, unlinkable key (so device state restarts, see
the README). Hashing is done once per *distinct* pseudonym in a batch, not once per ping.
Key 0 is reserved by the device index as "empty", so a hash of 0 is mapped to 1.
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


def device_keys(operators: np.ndarray, devices: np.ndarray, secret: bytes) -> np.ndarray:
    """Keyed 64-bit hashes (uint64) of (operator, pseudonym) pairs, one per input row.

    Strings or UTF-8 bytes (numpy ``U``/``S``/object arrays) give the same keys.
    """
    n = len(devices)
    if n == 0:
        return np.empty(0, dtype=np.uint64)
    ops, devs = np.asarray(operators), np.asarray(devices)
    if ops.dtype.kind != "S":
        ops = np.char.encode(ops.astype(str), "utf-8")
    if devs.dtype.kind != "S":
        devs = np.char.encode(devs.astype(str), "utf-8")
    # 0x1F (unit separator), not NUL: numpy strips trailing NULs from fixed-width strings
    pairs = np.char.add(ops, np.char.add(b"\x1f", devs))
    uniq, inverse = np.unique(pairs, return_inverse=True)
    key = secret[:64]
    blake2b = hashlib.blake2b
    hashed = np.fromiter(
        (int.from_bytes(blake2b(s, digest_size=8, key=key).digest(), "little") for s in uniq.tolist()),
        dtype=np.uint64,
        count=len(uniq),
    )
    hashed[hashed == 0] = 1
    return hashed[inverse.reshape(-1)]
