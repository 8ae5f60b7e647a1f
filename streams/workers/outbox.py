"""What the trainer sends that a checkpoint must see delivered first.

Three kinds of output come out of learning an event: dead letters (a malformed event goes to the
dead-letter topic), promotions (a new model version goes to the registry topic) and notices (a
drift detection or a drift action, see :mod:`trainers.actions`, also on the registry topic).
Before a checkpoint may cover the events that produced them, all must be on the broker; the
:class:`Outbox` holds them until then. Promotions and notices wait in one queue and are published
in the order they were made, so that the registry reads as the trainer decided: a drift, its
actions, the promotion they led to. Each is published as:

1. **pack**: serialize the promoted candidate and sign it as ``model`` v``version`` (once; a
   notice has no artifact);
2. **store**: ``SET NX`` the artifact under its digest in Redis; on a Redis error the promotion
   waits, with every later record behind it, and :meth:`Outbox.flush` reports it;
3. **publish**: send the signed :class:`~streams.registry.records.ModelVersion` to the registry
   topic and wait for the broker's acknowledgement.

Invariants, checked here and raised as :class:`~streams.workers.ledger.InvariantViolated`:

- **I3** no registry record without its stored artifact: a version's record is sent only for an
  artifact this outbox stored (a notice names none);
- **I5** each (model, version) and each notice (model, sequence) is published at most once: a
  promotion at or below the version already in the registry, or a notice at or below the
  sequence already there (a replay after a crash re-issues the same deterministic versions and
  notices), is dropped before packing, and a send of one is refused.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Awaitable, Callable, Collection, Iterable
from typing import Any

from streams.registry.artifacts import Artifact
from streams.registry.records import ModelVersion
from streams.workers.invariants import InvariantViolated
from trainers.actions import Notice
from trainers.trainer import Promotion

__all__ = ["Outbox", "Send"]

log = logging.getLogger("driftline.trainer")

Send = Callable[[str, bytes, bytes], Awaitable[Awaitable[Any]]]
"""Sends (topic, key, value); returns an awaitable that resolves once the broker has the record."""


class Outbox:
    """Dead letters in flight, and promotions and notices waiting, in order, until the broker
    has them.

    Parameters
    ----------
    send
        Produces a record and gives back its delivery.
    store_artifact
        Stores an artifact in Redis (idempotent); raises ``redis.RedisError`` when it cannot.
    registry_topic
        Where model versions and notices are published.
    signing_key
        Signs artifacts and records.
    redis_prefix
        Namespace of the artifact keys.
    store_errors
        The exceptions of ``store_artifact`` that mean "Redis is away, try again later".
    on_published
        Called with each record once the broker has it (the metrics count promotions there).
    """

    def __init__(
        self,
        *,
        send: Send,
        store_artifact: Callable[[Artifact], Awaitable[None]],
        registry_topic: str,
        signing_key: bytes,
        redis_prefix: str,
        store_errors: tuple[type[Exception], ...],
        on_published: Callable[[ModelVersion], None] | None = None,
    ) -> None:
        self._on_published = on_published
        self._send = send
        self._store_artifact = store_artifact
        self._registry_topic = registry_topic
        self._key = signing_key
        self._prefix = redis_prefix
        self._store_errors = store_errors
        self._in_flight: list[Awaitable[Any]] = []
        # Each waiting record with the artifact to store first (None for a notice).
        self._waiting: collections.deque[tuple[ModelVersion, Artifact | None]] = collections.deque()
        self._stored: set[str] = set()
        self.published: dict[str, int] = {}
        """The highest version of each model known to be in the registry."""
        self.noticed: dict[str, int] = {}
        """The highest notice sequence of each model known to be in the registry."""

    @property
    def waiting(self) -> int:
        """Promotions and notices not published yet (behind an artifact Redis could not store)."""
        return len(self._waiting)

    def waiting_models(self) -> set[str]:
        """Models with a promotion or a notice still waiting."""
        return {record.model for record, _ in self._waiting}

    def note_published(self, records: Iterable[ModelVersion]) -> None:
        """Take in records the registry holds (another owner's, or this one's before a crash)."""
        for record in records:
            sequence = record.notice_sequence
            if sequence is not None:
                self.noticed[record.model] = max(self.noticed.get(record.model, 0), sequence)
            else:
                self.published[record.model] = max(
                    self.published.get(record.model, 0), record.version
                )

    async def send(self, topic: str, key: bytes, value: bytes) -> None:
        """Send a record the next checkpoint must see delivered (a dead letter)."""
        self._in_flight.append(await self._send(topic, key, value))

    async def send_untracked(self, topic: str, key: bytes, value: bytes) -> None:
        """Send a record no checkpoint waits for (a metrics report: a replay may repeat it)."""
        await self._send(topic, key, value)

    async def promote(self, promotion: Promotion) -> None:
        """Queue ``promotion`` (step 1, pack) and try to publish every waiting record."""
        if promotion.version <= self.published.get(promotion.model, 0):
            log.info("%s v%d is already in the registry", promotion.model, promotion.version)
            return
        artifact = Artifact.pack(
            promotion.estimator,
            model=promotion.model,
            version=promotion.version,
            prefix=self._prefix,
            key=self._key,
        )
        record = ModelVersion.from_promotion(promotion, artifact.ref).signed(self._key)
        self._waiting.append((record, artifact))
        await self.publish_waiting()

    async def notify(self, notice: Notice, *, version: int) -> None:
        """Queue a drift or action ``notice``, made while ``version`` served, behind the waiting
        records, and try to publish every waiting record."""
        if notice.sequence <= self.noticed.get(notice.model, 0):
            log.info("%s notice %d is already in the registry", notice.model, notice.sequence)
            return
        record = ModelVersion.from_notice(notice, version).signed(self._key)
        self._waiting.append((record, None))
        await self.publish_waiting()

    async def publish_waiting(self) -> bool:
        """Steps 2 and 3 for each waiting record, in order; False when one still waits."""
        while self._waiting:
            record, artifact = self._waiting[0]
            if artifact is not None:
                try:
                    await self._store_artifact(artifact)
                except self._store_errors as error:
                    log.error(
                        "%s v%d waits: its artifact cannot be stored (%s); %d record(s) waiting",
                        record.model,
                        record.version,
                        error,
                        len(self._waiting),
                    )
                    return False
                self._stored.add(artifact.ref.sha256)
            await self._publish(record)
            self._waiting.popleft()
            notice = record.notice_sequence
            log.info(
                "published %s %s (%s): %s",
                record.model,
                f"v{record.version}" if notice is None else f"{record.kind} notice {notice}",
                record.candidate["name"],
                record.reason,
            )
        return True

    async def _publish(self, record: ModelVersion) -> None:
        sequence = record.notice_sequence
        if sequence is not None:
            if sequence <= self.noticed.get(record.model, 0):
                raise InvariantViolated("I5", f"{record.model} notice {sequence} published already")
        else:
            if record.artifact.sha256 not in self._stored:
                raise InvariantViolated(
                    "I3", f"{record.model} v{record.version}: artifact not stored"
                )
            if record.version <= self.published.get(record.model, 0):
                raise InvariantViolated("I5", f"{record.model} v{record.version} published already")
        delivery = await self._send(self._registry_topic, record.model.encode(), record.to_json())
        await delivery
        self.note_published([record])
        if self._on_published is not None:
            self._on_published(record)

    async def flush(self) -> bool:
        """Wait for every record in flight, then publish the waiting promotions and notices.

        True when everything is on the broker; False when a record still waits for Redis.
        """
        in_flight, self._in_flight = self._in_flight, []
        for delivery in in_flight:
            await delivery
        return await self.publish_waiting()

    def drop(self, models: Collection[str]) -> None:
        """Forget the waiting records of ``models`` (their partition went to another worker,
        which replays their events and issues them again)."""
        self._waiting = collections.deque(
            (record, artifact) for record, artifact in self._waiting if record.model not in models
        )
