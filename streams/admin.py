"""Creating driftline's topics, idempotently, with the settings each one needs, and checking
that the existing ones keep what a model version was learned from.

The labeled events are the training data of every model version, and the outcomes what labels
the events the scorer joins: both are created with infinite retention by default, so that
``driftline registry verify`` and ``driftline registry dataset`` work for any version, however
old. ``[worker] event_retention`` (``DRIFTLINE__worker__event_retention``) sets another one for
topics created from then on; :func:`retention_warnings` names the topics whose retention is
finite (the trainer worker logs them at start).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from streams.topics import Topics

FOREVER = -1
"""``retention.ms`` of a topic that keeps its records forever."""
KEEP_FOREVER = {"retention.ms": str(FOREVER), "retention.bytes": str(FOREVER)}
#: A dead letter carries its original bytes in base64 (4/3 of their size): an event just under
#: the broker's default 1 MiB limit must still fit.
DEAD_LETTER_MAX_BYTES = 4 * 1024 * 1024


def ensure_topics(
    topics: Topics,
    kafka: Mapping[str, Any],
    *,
    partitions: int = 4,
    event_retention_ms: int = FOREVER,
) -> None:
    """Create the topics that do not exist yet; existing ones are left as they are.

    The registry is the audit log of every promotion and the dead-letter topic holds the only
    copy of rejected events: both keep their records forever. The labeled events and the
    outcomes keep theirs for ``event_retention_ms`` (forever by default: see the module
    docstring).
    """
    events = _retention(event_retention_ms)
    wanted = [
        NewTopic(topics.labeled, partitions, 1, topic_configs=events),
        NewTopic(topics.unlabeled, partitions, 1),
        # Outcomes share the unlabeled topic's partitioning: a model's events and outcomes meet
        # in the same scorer.
        NewTopic(topics.outcomes, partitions, 1, topic_configs=events),
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


def _retention(retention_ms: int) -> dict[str, str]:
    return KEEP_FOREVER if retention_ms == FOREVER else {"retention.ms": str(retention_ms)}


def retention_warnings(topics: Topics, kafka: Mapping[str, Any]) -> list[str]:
    """One sentence per existing topic of training data (labeled events, outcomes) whose records
    expire: the versions learned from expired records can no longer be verified or exported."""
    names = [topics.labeled, topics.outcomes]
    admin = KafkaAdminClient(**kafka)
    try:
        existing = set(admin.list_topics())
        resources = [
            ConfigResource(ConfigResourceType.TOPIC, name, configs={"retention.ms": None})
            for name in names
            if name in existing
        ]
        described = admin.describe_configs(resources) if resources else {}
    except KafkaError as error:
        # A principal without DescribeConfigs on the topics: worth a line, not a failed start.
        return [f"could not read the retention of {', '.join(names)} ({error!r})"]
    finally:
        admin.close()
    warnings = []
    for name, configs in described.get("topic", {}).items():
        if "retention.ms" not in configs:
            # The broker leaves out what the topic does not set: it keeps the broker's default.
            warnings.append(
                f"topic {name} has no retention of its own: it keeps its records as long as the "
                "broker's log.retention.ms/hours says (7 days unless the broker is configured "
                "otherwise), after which the model versions learned from them can no longer be "
                "verified or exported (driftline registry verify, dataset); keep them with "
                f"kafka-configs --alter --topic {name} --add-config retention.ms=-1"
            )
            continue
        retention_ms = int(configs["retention.ms"]["value"])
        if retention_ms != FOREVER:
            warnings.append(
                f"topic {name} keeps its records for {retention_ms / 86_400_000:g} days "
                f"(retention.ms={retention_ms}): a model version learned from records older "
                "than that can no longer be verified or exported (driftline registry verify, "
                f"dataset); keep them with kafka-configs --alter --topic {name} "
                "--add-config retention.ms=-1"
            )
    return warnings
