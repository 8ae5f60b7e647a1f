"""What the trainer sends that a checkpoint must see delivered first.

Two kinds of output come out of learning an event: dead letters (a malformed event goes to the
dead-letter topic) and promotions (a new model version goes to the registry topic). Before a
checkpoint may cover the events that produced them, both must be on the broker; the
:class:`Outbox` holds them until then. Promotions are published in order, each as:

1. **pack**: serialize the promoted candidate and sign it as ``model`` v``version`` (once);
2. **store**: ``SET NX`` the artifact under its digest in Redis; on a Redis error the promotion
   waits, with every later one behind it, and :meth:`Outbox.flush` reports it;
3. **publish**: send the signed :class:`~streams.registry.records.ModelVersion` to the registry
   topic and wait for the broker's acknowledgement.

Invariants, checked here and raised as :class:`~streams.workers.ledger.InvariantViolated`:

- **I3** no registry record without its stored artifact: a record is sent only for an artifact
  this outbox stored;
- **I5** each (model, version) is published at most once: a promotion at or below the version
  already in the registry (a replay after a crash re-issues the same deterministic versions) is
  dropped before packing, and a send of one is refused.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Awaitable, Callable, Collection, Iterable
from typing import Any

from streams.registry.artifacts import Artifact
from streams.registry.records import ModelVersion
from streams.workers.invariants import InvariantViolated
from trainers.trainer import Promotion

__all__ = ["Outbox", "Send"]

log = logging.getLogger("driftline.trainer")

Send = Callable[[str, bytes, bytes], Awaitable[Awaitable[Any]]]
"""Sends (topic, key, value); returns an awaitable that resolves once the broker has the record."""


class Outbox:
    """Dead letters in flight and promotions waiting, in order, until the broker has them.

    Parameters
    ----------
    send
        Produces a record and gives back its delivery.
    store_artifact
        Stores an artifact in Redis (idempotent); raises ``redis.RedisError`` when it cannot.
    registry_topic
        Where model versions are published.
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
        self._waiting: collections.deque[tuple[Promotion, Artifact]] = collections.deque()
        self._stored: set[str] = set()
        self.published: dict[str, int] = {}
        """The highest version of each model known to be in the registry."""

    @property
    def waiting(self) -> int:
        """Promotions whose artifact could not be stored yet."""
        return len(self._waiting)

    def waiting_models(self) -> set[str]:
        """Models with a promotion still waiting."""
        return {promotion.model for promotion, _ in self._waiting}

    def note_published(self, records: Iterable[ModelVersion]) -> None:
        """Take in versions the registry holds (another owner's, or this one's before a crash)."""
        for record in records:
            self.published[record.model] = max(self.published.get(record.model, 0), record.version)

    async def send(self, topic: str, key: bytes, value: bytes) -> None:
        """Send a record the next checkpoint must see delivered (a dead letter)."""
        self._in_flight.append(await self._send(topic, key, value))

    async def send_untracked(self, topic: str, key: bytes, value: bytes) -> None:
        """Send a record no checkpoint waits for (a metrics report: a replay may repeat it)."""
        await self._send(topic, key, value)

    async def promote(self, promotion: Promotion) -> None:
        """Queue ``promotion`` (step 1, pack) and try to publish every waiting one."""
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
        self._waiting.append((promotion, artifact))
        await self.publish_waiting()

    async def publish_waiting(self) -> bool:
        """Steps 2 and 3 for each waiting promotion, in order; False when one still waits."""
        while self._waiting:
            promotion, artifact = self._waiting[0]
            try:
                await self._store_artifact(artifact)
            except self._store_errors as error:
                log.error(
                    "%s v%d waits: its artifact cannot be stored (%s); %d promotion(s) waiting",
                    promotion.model,
                    promotion.version,
                    error,
                    len(self._waiting),
                )
                return False
            self._stored.add(artifact.ref.sha256)
            record = ModelVersion.from_promotion(promotion, artifact.ref).signed(self._key)
            await self._publish(record)
            self._waiting.popleft()
            log.info(
                "published %s v%d (%s): %s",
                promotion.model,
                promotion.version,
                promotion.candidate,
                promotion.reason,
            )
        return True

    async def _publish(self, record: ModelVersion) -> None:
        if record.artifact.sha256 not in self._stored:
            raise InvariantViolated("I3", f"{record.model} v{record.version}: artifact not stored")
        if record.version <= self.published.get(record.model, 0):
            raise InvariantViolated("I5", f"{record.model} v{record.version} published already")
        delivery = await self._send(self._registry_topic, record.model.encode(), record.to_json())
        await delivery
        self.published[record.model] = record.version
        if self._on_published is not None:
            self._on_published(record)

    async def flush(self) -> bool:
        """Wait for every record in flight, then publish the waiting promotions.

        True when everything is on the broker; False when a promotion still waits for Redis.
        """
        in_flight, self._in_flight = self._in_flight, []
        for delivery in in_flight:
            await delivery
        return await self.publish_waiting()

    def drop(self, models: Collection[str]) -> None:
        """Forget the waiting promotions of ``models`` (their partition went to another worker,
        which replays their events and issues them again)."""
        self._waiting = collections.deque(
            (promotion, artifact)
            for promotion, artifact in self._waiting
            if promotion.model not in models
        )
