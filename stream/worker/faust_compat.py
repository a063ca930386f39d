"""Every private Faust / aiokafka hook the worker relies on, in one place.

Checked against faust-streaming 0.15.3 and the aiokafka it pins (``pyproject.toml``). After an
upgrade, re-run the end-to-end tests (``tests/worker/``): they fail if either hook stops working.

1. The consumer's fetch wait: Faust hard-codes ``fetch_max_wait_ms=1500``
   (:func:`short_fetch_wait_transport`).
2. Committing an exact offset: the worker commits the offset of its checkpoint, not what Faust
   has acked (:func:`commit_offset`, ``Consumer._commit``).
"""

from __future__ import annotations

import logging
from importlib.metadata import version
from typing import Any

import faust
from faust.types import TP

FAUST_VERSION_CHECKED = "0.15.3"
log = logging.getLogger("defacto.worker")


def check_faust_version() -> bool:
    """Whether the installed faust-streaming is the version these hooks were checked against;
    logs a warning naming both when it is not."""
    installed = version("faust-streaming")
    if installed != FAUST_VERSION_CHECKED:
        log.warning("faust-streaming %s is installed; defacto's Faust hooks were checked against %s: "
                    "re-run the end-to-end tests (tests/worker/) before trusting this worker",
                    installed, FAUST_VERSION_CHECKED)
    return installed == FAUST_VERSION_CHECKED


def short_fetch_wait_transport(fetch_wait_ms: int) -> type:
    """Faust's aiokafka transport with the consumer's fetch wait set to ``fetch_wait_ms``.

    Faust hard-codes ``fetch_max_wait_ms=1500``. aiokafka keeps one fetch in flight per broker
    and Faust always subscribes its (empty) assignor topic, so while the pings partition still has
    records, a fetch can ask for the empty topic alone and sit out the full 1.5 s: the pipeline
    then runs at a fraction of its speed (measured in ``bench/live_throughput.py``).
    """
    from faust.transport.drivers import aiokafka as faust_aiokafka

    class Thread(faust_aiokafka.AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport: Any) -> Any:
            consumer = super()._create_worker_consumer(transport)
            consumer._fetch_max_wait_ms = fetch_wait_ms  # read by aiokafka's fetcher at start
            return consumer

    class ShortWaitConsumer(faust_aiokafka.Consumer):
        def _new_consumer_thread(self) -> Any:
            return Thread(self, loop=self.loop, beacon=self.beacon)

    class Transport(faust_aiokafka.Transport):
        Consumer = ShortWaitConsumer

    return Transport


def use_transport(app: faust.App, transport_class: type) -> None:
    """Make ``app`` build its consumer transport from ``transport_class``."""
    app._new_transport = lambda: transport_class(app.conf.broker_consumer, app)  # type: ignore[method-assign]


async def commit_offset(app: faust.App, tp: TP, offset: int) -> None:
    """Commit exactly ``offset`` for ``tp`` (Faust's public commit commits what it has acked)."""
    await app.consumer._commit({tp: offset})
