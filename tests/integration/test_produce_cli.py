"""``driftline produce`` publishes what it replays, keyed by model, to the labeled topic."""

from __future__ import annotations

from kafka import KafkaConsumer
from pipeline import Deployment

from streams.contract import LabeledEvent, decode_labeled_record


def test_synthetic_file_and_dataset_sources_reach_the_topic(driftline_env, driftline_cli, tmp_path):
    def produce(*args: str) -> None:
        result = driftline_cli("produce", "--quiet", *args, env=driftline_env, timeout=120)
        assert result.returncode == 0, result.stderr

    deployment = Deployment(driftline_env)
    csv_file = tmp_path / "fraud.csv"
    csv_file.write_text("amount,is_fraud\n" + "".join(f"{i}.5,{i % 2}\n" for i in range(30)))
    produce("--synthetic", "sea", "--events", "500", "--drift-at", "250")
    produce("--file", str(csv_file), "--label", "is_fraud")
    produce("--dataset", "Phishing", "--events", "200", "--rate", "2000")

    consumer = KafkaConsumer(
        deployment.topics.labeled,
        auto_offset_reset="earliest",
        consumer_timeout_ms=5_000,
        **deployment.kafka,
    )
    # The SDK sends batch records: a record holds one event or several.
    events = [
        (record.key, entry.decoded)
        for record in consumer
        for entry in decode_labeled_record(record.value)
    ]
    consumer.close()
    per_model: dict[str, int] = {}
    for key, event in events:
        assert isinstance(event, LabeledEvent)
        assert key == event.model.encode()
        per_model[event.model] = per_model.get(event.model, 0) + 1
    assert per_model == {"sea": 500, "fraud": 30, "Phishing": 200}
