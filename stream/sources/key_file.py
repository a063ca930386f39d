"""The pseudonymization key: from a key file or ``$DEFACTO_PSEUDONYM_KEY``."""

from __future__ import annotations

from pathlib import Path

from estimators.pseudonym import load_secret
from stream.contract import InputError


def load_pseudonym_key(key_file: str | Path | None, stable: bool = False) -> bytes:
    """The key from ``key_file``, else ``$DEFACTO_PSEUDONYM_KEY``, else (unless ``stable``) a
    random per-run key.

    ``stable=True`` (workers) refuses a random key: every worker must derive the same device keys.
    Raises :class:`~stream.contract.InputError` for an unreadable or too short key, or a missing
    one when ``stable``.
    """
    try:
        secret, source = load_secret(str(key_file) if key_file else None)
    except OSError as exc:
        raise InputError(f"{key_file}: cannot read the key file ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise InputError(str(exc)) from None
    if stable and source.startswith("a random"):
        raise InputError("the worker needs a stable pseudonymization key shared by all workers: "
                         "--key-file or $DEFACTO_PSEUDONYM_KEY")
    return secret
