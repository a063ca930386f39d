"""The Faust version the worker shell was checked against.

The worker uses Faust only as its shell (:mod:`stream.worker.faust_app`: the worker process, the
app's lifecycle and ``crash``, ``BootStrategy(enable_kafka=False)``, ``app.service`` and the web
pages), all public API of faust-streaming 0.15.3 (``pyproject.toml``). Ingest, offsets and dead
letters go through confluent-kafka (:mod:`stream.worker.kafka_batch`), so no private Faust or
aiokafka hook is left. After an upgrade, re-run the end-to-end tests (``tests/worker/``).
"""

from __future__ import annotations

import logging
from importlib.metadata import version

FAUST_VERSION_CHECKED = "0.15.3"
log = logging.getLogger("defacto.worker")


def check_faust_version() -> bool:
    """Whether the installed faust-streaming is the version these hooks were checked against;
    logs a warning naming both when it is not."""
    installed = version("faust-streaming")
    if installed != FAUST_VERSION_CHECKED:
        log.warning("faust-streaming %s is installed; defacto's worker shell was checked against %s: "
                    "re-run the end-to-end tests (tests/worker/) before trusting this worker",
                    installed, FAUST_VERSION_CHECKED)
    return installed == FAUST_VERSION_CHECKED
