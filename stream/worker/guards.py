"""What a worker checks about the world it runs in, before trusting it: Redis and the topic.

- :func:`check_redis_at_start`: Redis must not evict defacto's keys, and the deployment's pinned
  settings (``P:deployment``) must be this worker's; both refused at start with one line.
- :class:`TopicWatch`: the pings topic's identity (topic id, where the broker reports one) and
  partition count, asked of the broker's admin API. A topic whose id changed is not the one the
  checkpoints came from (the broker lost its data, or the topic was deleted and recreated): its
  offsets mean other messages. A partition count other than the deployment's moves devices
  between partitions.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass

import redis
from redis.exceptions import RedisError, ResponseError

from estimators.units import SECOND_MS
from stream.contract import InputError
from stream.estimate.fingerprint import Fingerprint
from stream.publish.redis_keys import RedisKeys, redact_url
from stream.publish.redis_publisher import (
    CLAIM_SCRIPT,
    DeploymentMismatchError,
    deployment_from_claim,
    eviction_problem,
)
from stream.timefmt import iso_utc

log = logging.getLogger("defacto.worker")
NO_TOPIC_ID = "AAAAAAAAAAAAAAAAAAAAAA"
"""The all-zero topic id (base64) a broker sends when it has none."""


def check_redis_at_start(url: str, prefix: str, fingerprint: Fingerprint,
                         timeout_s: float = 5.0) -> str | None:
    """Refuse a Redis that may evict keys and a deployment pinned with other settings.

    Pins ``fingerprint`` in ``P:deployment`` when nothing is pinned yet. Raises
    :class:`~stream.contract.InputError` (one line, naming the setting and what to do); returns
    a warning when Redis does not answer (the worker checks again when it does), else None.
    """
    client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    keys = RedisKeys(prefix)
    try:
        try:
            problem = eviction_problem(client.info("memory"))
        except ResponseError as exc:  # INFO hidden by a managed service
            return (f"cannot read the eviction policy of Redis {redact_url(url)} ({exc}): make sure "
                    "it is maxmemory-policy noeviction")
        if problem is not None:
            raise InputError(f"Redis {redact_url(url)}: {problem}")
        token = secrets.token_hex(8)
        reply = client.eval(CLAIM_SCRIPT, 1, keys.deployment, token, fingerprint.to_json(),
                            fingerprint.digest, iso_utc(int(time.time()) * SECOND_MS))
        deployment_from_claim(reply, token, fingerprint, keys.deployment)
    except DeploymentMismatchError as exc:
        raise InputError(str(exc)) from None
    except (RedisError, OSError) as exc:
        return (f"Redis {redact_url(url)} does not answer ({exc}): its eviction policy and the "
                "deployment's settings are checked when it does")
    finally:
        client.close()
    return None


@dataclass(frozen=True)
class TopicInfo:
    """What the broker says of a topic: its ``topic_id`` (None when the broker has none) and
    its ``partitions`` count."""

    topic_id: str | None
    partitions: int


class TopicWatch:
    """Asks the broker's admin API about one topic (blocking calls: run them in a thread)."""

    def __init__(self, bootstrap: str, topic: str, timeout_s: float = 5.0) -> None:
        from confluent_kafka.admin import AdminClient

        self.topic = topic
        self.timeout_s = timeout_s
        self.admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 2,
                                  "socket.timeout.ms": int(timeout_s * SECOND_MS)})

    def describe(self) -> TopicInfo:
        """The topic's id and partition count; raises ``RuntimeError`` when the broker does not
        answer or the topic does not exist. A broker without DescribeTopics support is asked
        for metadata only (no topic id)."""
        from confluent_kafka import KafkaError, KafkaException, TopicCollection

        try:
            desc = self.admin.describe_topics(TopicCollection([self.topic]),
                                              request_timeout=self.timeout_s)[self.topic].result(
                timeout=self.timeout_s + 1)
            tid = str(desc.topic_id) if desc.topic_id is not None else None
            return TopicInfo(None if tid in (None, "", NO_TOPIC_ID) else tid, len(desc.partitions))
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if not (isinstance(err, KafkaError) and err.code() == KafkaError._UNSUPPORTED_FEATURE):
                raise RuntimeError(f"cannot describe topic {self.topic!r}: {exc}") from None
        except Exception as exc:  # a timeout of the future
            raise RuntimeError(f"cannot describe topic {self.topic!r}: {exc!r}") from None
        meta = self.admin.list_topics(self.topic, timeout=self.timeout_s)
        info = meta.topics.get(self.topic)
        if info is None or info.error is not None:
            raise RuntimeError(f"topic {self.topic!r} not found")
        return TopicInfo(None, len(info.partitions))
