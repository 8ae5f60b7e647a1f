"""Creating driftline's topics, idempotently, with the settings each one needs."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from streams.topics import Topics

KEEP_FOREVER = {"retention.ms": "-1", "retention.bytes": "-1"}
#: A dead letter carries its original bytes in base64 (4/3 of their size): an event just under
#: the broker's default 1 MiB limit must still fit.
DEAD_LETTER_MAX_BYTES = 4 * 1024 * 1024


def ensure_topics(topics: Topics, kafka: Mapping[str, Any], *, partitions: int = 4) -> None:
    """Create the topics that do not exist yet; existing ones are left as they are.

    The registry is the audit log of every promotion and the dead-letter topic holds the only
    copy of rejected events: both keep their records forever.
    """
    wanted = [
        NewTopic(topics.labeled, partitions, 1),
        NewTopic(topics.unlabeled, partitions, 1),
        # Outcomes share the unlabeled topic's partitioning: a model's events and outcomes meet
        # in the same scorer.
        NewTopic(topics.outcomes, partitions, 1),
        NewTopic(topics.predictions, partitions, 1),
        NewTopic(topics.metrics, 1, 1),
        NewTopic(
            topics.dlq,
            1,
            1,
            topic_configs={**KEEP_FOREVER, "max.message.bytes": str(DEAD_LETTER_MAX_BYTES)},
        ),
        NewTopic(topics.registry, 1, 1, topic_configs=KEEP_FOREVER),
    ]
    admin = KafkaAdminClient(**kafka)
    try:
        existing = set(admin.list_topics())
        missing = [topic for topic in wanted if topic.name not in existing]
        if not missing:
            return
        # Another worker may create them meanwhile.
        with contextlib.suppress(TopicAlreadyExistsError):
            admin.create_topics(missing)
    finally:
        admin.close()
