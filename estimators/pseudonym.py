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
SIP_CHUNK = 32768
"""Most messages hashed together: the state of a chunk (six uint64 columns, 1.5 MiB) stays in the
CPU's cache, and numpy's per-call cost is spread over enough rows."""
_U8, _U56 = np.uint64(8), np.uint64(56)


def _rotl(x: np.ndarray, b: int, scratch: np.ndarray) -> None:
    """``x`` rotated left by ``b`` bits, in place (``scratch``: a column of the same length)."""
    np.left_shift(x, np.uint64(b), out=scratch)
    np.right_shift(x, np.uint64(64 - b), out=x)
    x |= scratch


def _sip_rounds(v0: np.ndarray, v1: np.ndarray, v2: np.ndarray, v3: np.ndarray,
                scratch: np.ndarray, rounds: int) -> None:
    """SipRound ``rounds`` times on the four state columns, in place."""
    for _ in range(rounds):
        v0 += v1
        _rotl(v1, 13, scratch)
        v1 ^= v0
        _rotl(v0, 32, scratch)
        v2 += v3
        _rotl(v3, 16, scratch)
        v3 ^= v2
        v0 += v3
        _rotl(v3, 21, scratch)
        v3 ^= v0
        v2 += v1
        _rotl(v1, 17, scratch)
        v1 ^= v2
        _rotl(v2, 32, scratch)


def _sip_same_blocks(k0: np.uint64, k1: np.uint64, words: np.ndarray, tail: np.ndarray,
                     full: int) -> np.ndarray:
    """SipHash-2-4 of messages of ``full`` whole blocks plus a last one (``words[full]``, to
    which ``tail``, the length byte, is added), in chunks of at most :data:`SIP_CHUNK`."""
    n = words.shape[1]
    out = np.empty(n, dtype=np.uint64)
    chunks = -(-n // SIP_CHUNK)
    size = -(-n // chunks)
    with np.errstate(over="ignore"):
        for lo in range(0, n, size):
            hi = min(lo + size, n)
            m = hi - lo
            v0 = np.full(m, np.uint64(_SIP_INIT[0]) ^ k0)
            v1 = np.full(m, np.uint64(_SIP_INIT[1]) ^ k1)
            v2 = np.full(m, np.uint64(_SIP_INIT[2]) ^ k0)
            v3 = np.full(m, np.uint64(_SIP_INIT[3]) ^ k1)
            scratch = np.empty(m, dtype=np.uint64)
            for j in range(full + 1):
                block = words[j, lo:hi] | tail[lo:hi] if j == full else words[j, lo:hi]
                v3 ^= block
                _sip_rounds(v0, v1, v2, v3, scratch, 2)
                v0 ^= block
            v2 ^= np.uint64(0xFF)
            _sip_rounds(v0, v1, v2, v3, scratch, 4)
            v0 ^= v1
            v2 ^= v3
            v0 ^= v2
            out[lo:hi] = v0
    return out


def siphash_words(key16: bytes, words: np.ndarray, length: np.ndarray, repeats: bool = False
                  ) -> np.ndarray:
    """SipHash-2-4 (uint64) of ``n`` messages given as 8-byte blocks, one column per message.

    ``words``: uint64[b, n], block ``j`` of every message read little-endian, zero past each
    message's ``length`` (uint64[n], bytes), with ``b > length // 8``; it is not modified.
    Messages with the same number of blocks are hashed together, one numpy operation per step
    of the algorithm for all of them. With ``repeats`` (batches where messages often repeat: a
    chunk of a ping file holds several pings of most devices), each message repeated in the
    batch is hashed once (:func:`repeated_messages`) when that saves work; the hashes are the
    same either way.
    """
    if len(key16) != 16:
        raise ValueError("SipHash needs a 16-byte key")
    length = np.asarray(length, dtype=np.uint64)
    n = len(length)
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    k0 = np.uint64(int.from_bytes(key16[:8], "little"))
    k1 = np.uint64(int.from_bytes(key16[8:], "little"))
    found = repeated_messages(words, length) if repeats and _REPEATS_MIN <= n < 1 << 31 \
        else None
    if found is None:
        return _siphash_rows(k0, k1, words, length)
    hashed, source = found
    out = np.empty(n, dtype=np.uint64)
    out[hashed] = _siphash_rows(k0, k1, words[:, hashed], length[hashed])
    return out.take(source)


_REPEATS_MIN = 4096
"""Fewest messages :func:`siphash_words` looks for repeats among (fewer: hashed as they are)."""
_REPEATS_MAX_SHARE = 0.75
"""Share of distinct messages above which :func:`repeated_messages` gives up (the rows to
gather would cost about what hashing the repeats does)."""
_REPEAT_MIX = [np.uint64((0x9E3779B97F4A7C15 * (2 * i + 1)) % (1 << 64) | 1) for i in range(17)]


def repeated_messages(words: np.ndarray, length: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray] | None:
    """Messages of a batch (as :func:`siphash_words` takes them) that repeat another one,
    found in one pass, without sorting: the rows to hash (int64, ascending) and, for each row,
    the row whose hash it takes (int32[n]: itself for a row hashed). None when too few repeat
    (:data:`_REPEATS_MAX_SHARE`).

    Each message is placed in a table slot by a multiplicative hash of its blocks and length;
    one message per slot wins the slot. A row takes the winner's hash only when the winner's
    message is the same as its own, block for block and in length (checked), so the hashes
    are exactly those of hashing every row; a row whose slot another message won is hashed
    itself (rare: the table has at least twice as many slots as rows).
    """
    n = len(length)
    bits = max(10, int(2 * n - 1).bit_length())
    h = length * _REPEAT_MIX[0]
    for j in range(words.shape[0]):
        h ^= words[j] * _REPEAT_MIX[(j + 1) % len(_REPEAT_MIX)]
    slot = (h >> np.uint64(64 - bits)).astype(np.intp)
    rows = np.arange(n, dtype=np.int32)
    table = np.empty(1 << bits, dtype=np.int32)
    table[slot] = rows  # one of the rows of each slot wins it
    source = table.take(slot)
    same = length.take(source) == length
    for j in range(words.shape[0]):
        same &= words[j].take(source) == words[j]
    source = np.where(same, source, rows)
    hashed = np.flatnonzero(source == rows)
    if hashed.size > _REPEATS_MAX_SHARE * n:
        return None
    return hashed, source


def _siphash_rows(k0: np.uint64, k1: np.uint64, words: np.ndarray, length: np.ndarray
                  ) -> np.ndarray:
    """:func:`siphash_words` of every row (no repeats looked for), ``length`` uint64[n]."""
    n = len(length)
    full = (length >> np.uint64(3)).astype(np.int64)
    tail = (length & np.uint64(0xFF)) << _U56
    lo, hi = int(full.min()), int(full.max())
    if hi >= words.shape[0]:
        raise ValueError("SipHash: fewer blocks than the messages' lengths need")
    if lo == hi:
        return _sip_same_blocks(k0, k1, words, tail, lo)
    out = np.empty(n, dtype=np.uint64)
    for blocks in np.unique(full).tolist():
        rows = np.flatnonzero(full == blocks)
        out[rows] = _sip_same_blocks(k0, k1, words[:blocks + 1, rows], tail[rows], blocks)
    return out


def text_words(values: np.ndarray, blocks: int | None = None) -> np.ndarray:
    """The bytes of a ``|S`` column as 8-byte little-endian blocks, one column per value:
    uint64[b, n], zero past each value (``b``: ``blocks``, default enough for the widest)."""
    n, width = len(values), values.dtype.itemsize
    blocks = -(-width // 8) if blocks is None else blocks
    raw = np.ascontiguousarray(values).view(np.uint8).reshape(n, width)
    if width == blocks * 8:
        return np.ascontiguousarray(raw.view("<u8").T)
    padded = np.zeros((n, blocks * 8), dtype=np.uint8)
    padded[:, :min(width, blocks * 8)] = raw[:, :blocks * 8]
    return np.ascontiguousarray(padded.view("<u8").T)


def siphash24(key16: bytes, messages: np.ndarray) -> np.ndarray:
    """SipHash-2-4 (uint64) of every byte string in a ``|S`` array, under a 16-byte key.

    Vectorized over rows (:func:`siphash_words`). Trailing NUL bytes are not part of a message
    (numpy's ``|S`` semantics).
    """
    if len(key16) != 16:
        raise ValueError("SipHash needs a 16-byte key")
    msgs = np.ascontiguousarray(np.asarray(messages, dtype=np.bytes_))
    if len(msgs) == 0:
        return np.zeros(0, dtype=np.uint64)
    length = np.strings.str_len(msgs).astype(np.uint64)
    return siphash_words(key16, text_words(msgs, int(length.max()) // 8 + 1), length)


def device_words(operators: np.ndarray, devices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The messages ``operator || 0x1F || device`` of two ``|S`` columns (each value without its
    NUL padding), as :func:`siphash_words` takes them: (uint64[b, n] blocks, uint64[n] lengths).

    Operators of at most 6 bytes (the contract's): the prefix ``operator || 0x1F`` fills the
    first block's low bytes and the device's blocks are shifted in behind it, a few whole-column
    shifts per block; wider operators are laid out byte by byte.
    """
    ops = np.ascontiguousarray(operators)
    devs = np.ascontiguousarray(devices)
    n = len(devs)
    op_len = np.strings.str_len(ops).astype(np.uint64)
    dev_len = np.strings.str_len(devs).astype(np.uint64)
    length = op_len + np.uint64(1) + dev_len
    need = int(length.max()) // 8 + 1 if n else 1
    if ops.dtype.itemsize > 6:
        return _device_words_bytes(ops, devs, op_len, length, need), length
    dev = text_words(devs)
    opw = np.zeros((n, 8), dtype=np.uint8)
    opw[:, :ops.dtype.itemsize] = ops.view(np.uint8).reshape(n, ops.dtype.itemsize)
    prefix = opw.view("<u8").reshape(n)
    out = np.empty((need, n), dtype=np.uint64)
    first, last = int(op_len.min()), int(op_len.max())
    if first == last:  # one operator length: shifts by a constant
        up: np.uint64 | np.ndarray = np.uint64(8 * (first + 1))
        prefix |= np.uint64(0x1F) << np.uint64(8 * first)
    else:
        up = (op_len + np.uint64(1)) * _U8
        prefix |= np.uint64(0x1F) << (op_len * _U8)
    down = np.uint64(64) - up
    for j in range(need):
        word = dev[j] << up if j < len(dev) else np.zeros(n, dtype=np.uint64)
        if j == 0:
            word |= prefix
        elif j - 1 < len(dev):
            word |= dev[j - 1] >> down
        out[j] = word
    return out, length


def _device_words_bytes(ops: np.ndarray, devs: np.ndarray, op_len: np.ndarray, length: np.ndarray,
                        blocks: int) -> np.ndarray:
    """:func:`device_words` laid out byte by byte (any operator width)."""
    n = len(devs)
    width = blocks * 8
    msg = np.zeros((n, max(width, ops.dtype.itemsize + 1 + devs.dtype.itemsize)), dtype=np.uint8)
    op_raw = ops.view(np.uint8).reshape(n, ops.dtype.itemsize)
    dev_raw = devs.view(np.uint8).reshape(n, devs.dtype.itemsize)
    for k in np.unique(op_len).tolist():
        rows = np.flatnonzero(op_len == k)
        msg[rows, :k] = op_raw[rows, :k]
        msg[rows, k] = 0x1F
        msg[rows, k + 1:k + 1 + devs.dtype.itemsize] = dev_raw[rows]
    return np.ascontiguousarray(msg[:, :width].view("<u8").T)


def device_key_secret(secret: bytes) -> bytes:
    """The 16-byte SipHash key derived from the configured secret."""
    return hashlib.blake2b(b"defacto device key", key=secret[:64], digest_size=16).digest()


def device_keys(operators: np.ndarray, devices: np.ndarray, secret: bytes) -> np.ndarray:
    """Keyed 64-bit hashes (uint64) of (operator, pseudonym) pairs, one per input row.

    Strings or UTF-8 bytes (numpy ``U``/``S``/object arrays) give the same keys. The message is
    ``operator || 0x1F || pseudonym`` (0x1F, the unit separator, not NUL: numpy strips trailing
    NULs from fixed-width strings), laid out by :func:`device_words`.
    """
    if len(devices) == 0:
        return np.empty(0, dtype=np.uint64)
    ops, devs = np.asarray(operators), np.asarray(devices)
    if ops.dtype.kind != "S":
        ops = np.char.encode(ops.astype(str), "utf-8")
    if devs.dtype.kind != "S":
        devs = np.char.encode(devs.astype(str), "utf-8")
    words, length = device_words(ops, devs)
    hashed = siphash_words(device_key_secret(secret), words, length)
    hashed[hashed == 0] = 1  # key 0 is the device index's "empty"
    return hashed
