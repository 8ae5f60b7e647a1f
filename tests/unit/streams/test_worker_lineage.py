"""The trainer worker tells the lineage what it dropped and what it obeyed.

Over the in-memory fakes of ``test_ledger`` and ``test_trainer_obeys``; the same lineage is
replayed against a real broker in tests/integration/test_verify.py.
"""

from __future__ import annotations

import dataclasses

from test_ledger import LABELED, Event, run, sea_events
from test_trainer_obeys import Deployment, ending

from streams.contract import decode_labeled, encode_event, event_position
from streams.registry.records import RecordKind


def joined(event: Event, offset: int, seq: int) -> Event:
    """``event`` as the scorer's join numbered ``seq`` publishes it, at ``offset``."""
    decoded = decode_labeled(event.message.value)
    value = {**decoded.to_json_object(), "join": {"source": "scorer/0", "seq": seq}}
    return Event(dataclasses.replace(event.message, offset=offset, value=encode_event(value)))


def test_a_duplicate_join_is_a_skipped_position_of_the_lineage():
    deployment = Deployment()
    events = sea_events(3)
    replayed = [joined(events[0], 0, seq=1), joined(events[1], 1, seq=2)]
    republished = joined(events[1], 2, seq=2)  # the scorer crashed and published it again

    async def feed() -> None:
        await deployment.runtime.obey([], caught_up=True)
        for event in [*replayed, republished]:
            await deployment.runtime.handle(event)

    run(feed())
    (span,) = deployment.trainer().lineage["ranges"]
    assert span["events"] == 2
    assert span["skipped"]["offsets"] == [event_position(2, None)]
    assert span["source"] == f"{LABELED.topic}[{LABELED.partition}]"


def test_an_obeyed_record_is_an_adoption_of_the_lineage():
    deployment = Deployment()
    trial = run(deployment.until_trial())
    stable = deployment.record(trial.previous_version)
    run(deployment.publish(ending(stable, RecordKind.ROLLBACK, previous=trial.version)))
    trainer = deployment.trainer()
    adoption = trainer.lineage["adoptions"][-1]
    assert (adoption["version"], adoption["events"], adoption["artifact"]) == (
        stable.version,
        trainer.events,
        True,
    )
    # Read from the fake broker, the record has no offset; its signature names it.
    assert adoption["registry_offset"] is None
    assert adoption["record_signature"] == deployment.broker.records()[-1].signature
