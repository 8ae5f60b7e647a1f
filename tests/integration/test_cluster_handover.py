"""The ``kafka_cluster`` fixture and the Python drills of :class:`streams.stack.LocalStack`: a
controlled shutdown hands a node's leaderships over before it exits."""

from __future__ import annotations

import uuid
from typing import Any

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from pipeline import wait_for

from streams.stack.cluster import group_coordinator, in_sync_replicas, partition_leader


def test_a_stopped_node_hands_over_its_leaderships_and_rejoins(kafka_cluster: Any) -> None:
    """The ``kafka_cluster`` fixture and the Python drills: a controlled shutdown (SIGTERM)
    moves a node's leaderships before it exits, so no fencing delay; a node started again
    catches up and rejoins every ISR."""
    stack = kafka_cluster.node_control()
    kafka = {"bootstrap_servers": kafka_cluster.kafka_bootstrap}
    assert stack.node_ids() == [1, 2, 3]
    assert kafka_cluster.kafka_bootstrap == ",".join(stack.bootstrap_of(n) for n in (1, 2, 3))
    topic, group = f"handover-{uuid.uuid4().hex[:8]}", f"group-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(**kafka)
    try:
        admin.create_topics([NewTopic(topic, 1, -1)], wait_for_metadata=True)
    finally:
        admin.close()
    coordinator = group_coordinator(kafka, group)
    stack.stop_node(coordinator)
    try:
        assert group_coordinator(kafka, group) != coordinator
        assert partition_leader(kafka, topic, 0) != coordinator
        assert coordinator not in in_sync_replicas(kafka, topic, 0)
    finally:
        stack.start_node(coordinator)
    wait_for(
        lambda: in_sync_replicas(kafka, topic, 0) == [1, 2, 3],
        timeout=40,
        what="the restarted node back in the ISR",
    )
