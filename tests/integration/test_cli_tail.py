"""``driftline tail`` prints what the workers wrote: dead letters decoded, filtered by model."""

from __future__ import annotations

import json

from kafka import KafkaProducer
from pipeline import Deployment

from streams.admin import ensure_topics
from streams.contract import dead_letter_record


def test_dead_letters_and_predictions_read_back(driftline_env, driftline_cli):
    deployment = Deployment(driftline_env)
    topics = deployment.topics
    ensure_topics(topics, deployment.kafka, partitions=2)
    producer = KafkaProducer(**deployment.kafka)
    for offset, (model, raw) in enumerate(
        [("sea", b'{"model": "sea", "ts": NaN'), ("fraud", b"x")]
    ):
        key, value = dead_letter_record(
            raw, "not json", topic=topics.labeled, partition=1, offset=offset, key=model.encode()
        )
        producer.send(topics.dlq, key=key, value=value)
    for index in range(30):
        prediction = {
            "event_id": f"sea-{index}",
            "model": "sea",
            "version": 2,
            "prediction": True,
            "probabilities": {"false": 0.25, "true": 0.75},
        }
        producer.send(topics.predictions, key=b"sea", value=json.dumps(prediction).encode())
    producer.flush()
    producer.close()

    dlq = driftline_cli("tail", "dlq", "--model", "sea", env=driftline_env, timeout=60)
    assert dlq.returncode == 0, dlq.stderr
    (line,) = dlq.stdout.strip().splitlines()
    assert line.startswith(f"rejected  {topics.labeled}[1]@0  key=sea  not json")
    assert """'{"model": "sea", "ts": NaN'""" in line

    as_json = driftline_cli("tail", "dlq", "--json", env=driftline_env, timeout=60)
    letters = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [letter["original"] for letter in letters] == ['{"model": "sea", "ts": NaN', "x"]
    assert letters[1]["source"] == {"topic": topics.labeled, "partition": 1, "offset": 1}

    predictions = driftline_cli("tail", "predictions", "-n", "5", env=driftline_env, timeout=60)
    lines = predictions.stdout.strip().splitlines()
    assert lines == [f"sea v2  sea-{index} -> True  (p=0.750)" for index in range(25, 30)]
    everything = driftline_cli("tail", "predictions", "-n", "0", env=driftline_env, timeout=60)
    assert len(everything.stdout.splitlines()) == 30
