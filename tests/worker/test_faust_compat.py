"""The private Faust hooks are checked against the pinned Faust: the start-up check agrees."""

from __future__ import annotations

import logging
from unittest import mock

import pytest

from stream.worker import faust_compat


def test_pinned_faust_is_the_checked_version() -> None:
    assert faust_compat.check_faust_version()


def test_another_faust_version_is_named_in_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with mock.patch.object(faust_compat, "version", return_value="9.9.9"), \
            caplog.at_level(logging.WARNING, logger="defacto.worker"):
        assert not faust_compat.check_faust_version()
    assert "9.9.9" in caplog.text and faust_compat.FAUST_VERSION_CHECKED in caplog.text
