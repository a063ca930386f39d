"""SipHash of batches with repeated messages: hashing each distinct message once
(:func:`estimators.pseudonym.repeated_messages`) gives exactly the hashes of every row."""

from __future__ import annotations

import numpy as np
import siphashc

from estimators.pseudonym import repeated_messages, siphash24, siphash_words, text_words


def _messages(rng: np.random.Generator, distinct: int, n: int) -> np.ndarray:
    """``n`` messages drawn from ``distinct`` ones, some of them prefixes of others (the same
    first blocks, another length)."""
    base = [rng.bytes(int(k)).rstrip(b"\x00") for k in rng.integers(0, 40, distinct)]
    base += [m[: len(m) // 2] for m in base[: distinct // 4]]
    pick = rng.integers(0, len(base), n)
    return np.array([base[i] for i in pick.tolist()], dtype=np.bytes_)


def test_repeated_messages_hash_as_every_row() -> None:
    rng = np.random.default_rng(14)
    key = bytes(range(16))
    msgs = _messages(rng, 3_000, 30_000)
    length = np.strings.str_len(msgs).astype(np.uint64)
    words = text_words(msgs, int(length.max()) // 8 + 1)
    found = repeated_messages(words, length)
    assert found is not None and found[0].size < 5_000
    got = siphash_words(key, words, length, repeats=True)
    assert [int(h) for h in got] == [siphashc.siphash(key, m) for m in msgs.tolist()]
    assert np.array_equal(siphash24(key, msgs), got)


def test_each_row_takes_the_hash_of_the_same_message() -> None:
    rng = np.random.default_rng(15)
    msgs = _messages(rng, 900, 3_000)  # a small table: slots shared by different messages
    length = np.strings.str_len(msgs).astype(np.uint64)
    words = text_words(msgs, int(length.max()) // 8 + 1)
    found = repeated_messages(words, length)
    assert found is not None
    hashed, source = found
    assert np.array_equal(msgs[source], msgs) and np.array_equal(length[source], length)
    assert np.array_equal(hashed, np.flatnonzero(source == np.arange(len(msgs))))
    assert len(np.unique(msgs[hashed])) <= hashed.size < len(msgs)


def test_batches_of_distinct_messages_are_hashed_row_by_row() -> None:
    rng = np.random.default_rng(16)
    msgs = np.array([rng.bytes(12) + b"x" for _ in range(6_000)], dtype=np.bytes_)
    length = np.strings.str_len(msgs).astype(np.uint64)
    words = text_words(msgs)
    assert repeated_messages(words, length) is None
    key = bytes(range(16, 32))
    assert [int(h) for h in siphash_words(key, words, length, repeats=True)] == \
        [siphashc.siphash(key, m) for m in msgs.tolist()]
