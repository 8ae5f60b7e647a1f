"""What the trainer sends that a checkpoint must see delivered first.

Three kinds of output come out of learning an event: dead letters (a malformed event goes to the
dead-letter topic), promotions (a new model version goes to the registry topic) and notices (a
drift detection or a drift action, see :mod:`trainers.actions`, also on the registry topic).
Before a checkpoint may cover the events that produced them, all must be on the broker; the
:class:`Outbox` holds them until then.

Dead letters are **tracked**: each is kept (topic, key, value) with its delivery until the broker
acknowledges it, so that one whose delivery fails is sent again, never dropped:

1. **send**: hand the record to the producer, without waiting (a worker's producer is idempotent
   with ``acks=all``: its own retries neither lose nor repeat it); once a delivery has failed,
   a new record is only queued behind it, so that the records go out in the order they were made;
2. **flush** (the checkpoint's step 5a): send again, in order, every tracked record whose
   delivery failed after the producer's retries (or that was only queued), then wait for each
   acknowledgement in order and forget the acknowledged records. A delivery error (the broker
   away past the producer's retries) stops the flush: the records stay tracked, the checkpoint
   is retried after the ledger's backoff, and the outage is logged once.

Promotions and notices wait in one queue and are published in the order they were made, so that
the registry reads as the trainer decided: a drift, its actions, the promotion they led to. Each
is published as:

1. **pack**: serialize the promoted candidate and sign it as ``model`` v``version`` (once; a
   notice has no artifact);
2. **store**: ``SET NX`` the artifact under its digest in Redis; on a Redis error the promotion
   waits, with every later record behind it, and :meth:`Outbox.flush` reports it;
3. **publish**: send the signed :class:`~streams.registry.records.ModelVersion` to the registry
   topic and wait for the broker's acknowledgement; on a delivery error it waits, as on a Redis
   error, and is published again by a later flush (unless the registry shows it arrived after
   all: the trainer follows the registry).

Invariants, checked here and raised as :class:`~streams.workers.ledger.InvariantViolated`:

- **I3** no registry record without its stored artifact: a version's record is sent only for an
  artifact this outbox stored (a notice names none);
- **I5** each (model, version) and each notice (model, sequence) is published at most once: a
  promotion at or below the version already in the registry, or a notice at or below the
  sequence already there (a replay after a crash re-issues the same deterministic versions and
  notices), is never published again, and a send of one is refused.

A promotion the registry holds already is still packed when the registry has the trainer's record
of its version: with the same artifact SHA-256, the artifact is stored again if Redis lost it; with
another, one ``diverged`` error line names both digests (the learning went elsewhere than the
published version) and nothing is stored.

The ledger keeps I6 with it: no checkpoint while a tracked record is unacknowledged
(:attr:`Outbox.undelivered`).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from streams.registry.artifacts import Artifact
from streams.registry.records import NEW_VERSION_KINDS, ModelVersion
from streams.workers.invariants import InvariantViolated
from trainers.actions import Notice
from trainers.trainer import Promotion

__all__ = ["Delivered", "Outbox", "Send"]

log = logging.getLogger("driftline.trainer")

Send = Callable[[str, bytes, bytes], Awaitable[Awaitable[Any]]]
"""Sends (topic, key, value); returns an awaitable that resolves once the broker has the record,
to its :class:`Delivered` metadata, or raises the producer's delivery error."""


class Delivered(Protocol):
    """Where the broker put a record (aiokafka's ``RecordMetadata``)."""

    @property
    def topic(self) -> str: ...

    @property
    def partition(self) -> int: ...

    @property
    def offset(self) -> int: ...


@dataclass
class _Tracked:
    """A record a checkpoint waits for, kept whole until the broker acknowledges it."""

    topic: str
    key: bytes
    value: bytes
    delivery: asyncio.Future[Any] | None = None
    """Its delivery in flight or done; None while it waits to be sent (again)."""

    def failed(self) -> bool:
        """Whether its delivery is over without an acknowledgement."""
        delivery = self.delivery
        return delivery is not None and delivery.done() and delivery.exception() is not None


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
    delivery_errors
        The exceptions of ``send`` and of its deliveries that mean "the broker did not take the
        record after the producer's retries, send it again later".
    on_published
        Called with each record once the broker has it (the metrics count promotions there).
    holds_artifact
        Whether Redis holds an artifact (raises as ``store_artifact`` does): a version learned
        again has its artifact stored again only when Redis lost it. None stores it every time
        (idempotent), without telling a lost artifact from a present one.
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
        delivery_errors: tuple[type[Exception], ...],
        on_published: Callable[[ModelVersion], None] | None = None,
        holds_artifact: Callable[[Artifact], Awaitable[bool]] | None = None,
    ) -> None:
        self._on_published = on_published
        self._send = send
        self._store_artifact = store_artifact
        self._holds_artifact = holds_artifact
        self._registry_topic = registry_topic
        self._key = signing_key
        self._prefix = redis_prefix
        self._store_errors = store_errors
        self._delivery_errors = delivery_errors
        self._tracked: collections.deque[_Tracked] = collections.deque()
        self._holding = False
        """A delivery failed: records are queued, not sent, until a flush sends them in order."""
        self._outage: str | None = None
        """The first delivery error of the current outage (logged once), None outside one."""
        self._acknowledged: dict[tuple[str, int], int] = {}
        # Each waiting record with the artifact to store first (None for a notice).
        self._waiting: collections.deque[tuple[ModelVersion, Artifact | None]] = collections.deque()
        self._stored: set[str] = set()
        self.published: dict[str, int] = {}
        """The highest version of each model known to be in the registry."""
        self.noticed: dict[str, int] = {}
        """The highest notice sequence of each model known to be in the registry."""
        self.recorded: dict[tuple[str, int], str] = {}
        """The artifact SHA-256 of the trainer's record of each (model, version) in the
        registry."""

    @property
    def undelivered(self) -> int:
        """Tracked records the broker has not acknowledged yet (in flight, or to send again)."""
        return len(self._tracked)

    def acknowledged_end(self, topic: str, partition: int) -> int:
        """One past the highest offset of ``topic[partition]`` the broker acknowledged to this
        outbox for a tracked record (0 before any): whatever it sends later lands after it."""
        return self._acknowledged.get((topic, partition), 0)

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
            if record.kind in NEW_VERSION_KINDS and record.operator is None:
                # The first is the trainer's: an operator's trial of the version repeats it.
                self.recorded.setdefault((record.model, record.version), record.artifact.sha256)

    async def send(self, topic: str, key: bytes, value: bytes) -> None:
        """Step 1 for a record the next checkpoint must see delivered (a dead letter)."""
        tracked = _Tracked(topic, key, value)
        if self._tracked and self._tracked[-1].failed():
            self._holding = True  # reported before its done-callback ran
        self._tracked.append(tracked)
        if self._holding:
            return  # behind a record to send again: the next flush sends both, in order
        try:
            tracked.delivery = await self._produce(tracked)
        except self._delivery_errors as error:
            self._failed(error)
            return
        tracked.delivery.add_done_callback(self._hold_if_failed)

    def _hold_if_failed(self, delivery: asyncio.Future[Any]) -> None:
        # A failed delivery holds back the records sent after it is known, so that they follow
        # it when it is sent again, as they followed it the first time.
        if not delivery.cancelled() and delivery.exception() is not None:
            self._holding = True

    async def send_untracked(self, topic: str, key: bytes, value: bytes) -> None:
        """Send a record no checkpoint waits for (a metrics report: a replay may repeat it, and
        one the broker does not take is only logged)."""
        try:
            await self._send(topic, key, value)
        except self._delivery_errors as error:
            log.debug("a record to %s was not sent: %s", topic, error)

    async def _produce(self, tracked: _Tracked) -> asyncio.Future[Any]:
        return asyncio.ensure_future(await self._send(tracked.topic, tracked.key, tracked.value))

    def _failed(self, error: Exception) -> None:
        """A send or a delivery failed: hold new records back, and mark every delivery that
        failed so far to be sent again."""
        self._holding = True
        for tracked in self._tracked:
            if tracked.failed():
                tracked.delivery = None
        if self._outage is None:
            self._outage = repr(error)
            log.error(
                "the broker did not take a record after the producer's retries (%s): %d record(s) "
                "are kept and sent again, in order, before the next checkpoint",
                error,
                len(self._tracked),
            )

    def _recovered(self) -> None:
        if self._outage is not None:
            log.info("records delivered again after an outage (%s)", self._outage)
        self._outage = None

    async def promote(self, promotion: Promotion) -> None:
        """Queue ``promotion`` (step 1, pack) and try to publish every waiting record."""
        if promotion.version <= self.published.get(promotion.model, 0):
            await self._rederived(promotion)
            return
        artifact = self._pack(promotion)
        record = ModelVersion.from_promotion(promotion, artifact.ref).signed(self._key)
        self._waiting.append((record, artifact))
        await self.publish_waiting()

    def _pack(self, promotion: Promotion) -> Artifact:
        return Artifact.pack(
            promotion.estimator,
            model=promotion.model,
            version=promotion.version,
            prefix=self._prefix,
            key=self._key,
        )

    async def _rederived(self, promotion: Promotion) -> None:
        """A version the registry holds, learned again (a replay): store its artifact again if
        Redis lost it, or say that the learning diverged from it."""
        model, version = promotion.model, promotion.version
        recorded = self.recorded.get((model, version))
        if recorded is None:
            # Only a version number, not the trainer's record of it (never read): nothing to
            # compare with.
            log.info("%s v%d is already in the registry", model, version)
            return
        artifact = self._pack(promotion)
        if artifact.ref.sha256 != recorded:
            # Stopping the partition here is for later; for now the operator is told, loudly.
            log.error(
                "diverged: %s v%d learned again gives artifact sha256 %s, the registry's record "
                "names %s; not stored",
                model,
                version,
                artifact.ref.sha256,
                recorded,
            )
            return
        try:
            if self._holds_artifact is not None and await self._holds_artifact(artifact):
                log.info("%s v%d is already in the registry", model, version)
                return
            await self._store_artifact(artifact)
        except self._store_errors as error:
            # Not queued: the version is published, and `registry restore-artifacts` (or the
            # next replay) can still store it.
            log.error(
                "%s v%d is already in the registry; its artifact cannot be checked in Redis (%s)",
                model,
                version,
                error,
            )
            return
        if self._holds_artifact is None:
            log.info(
                "%s v%d is already in the registry (its artifact stored again)", model, version
            )
        else:
            log.warning(
                "%s v%d: its artifact was missing from Redis, learned again and stored again "
                "(sha256 %s)",
                model,
                version,
                recorded,
            )

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
            if self._in_registry(record):
                # Only a record whose delivery was reported failed can be here: the broker had it
                # after all (the follower read it since), and I5 forbids a second copy.
                self._waiting.popleft()
                continue
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
            try:
                await self._publish(record)
            except self._delivery_errors as error:
                self._failed(error)
                return False
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

    def _in_registry(self, record: ModelVersion) -> bool:
        sequence = record.notice_sequence
        if sequence is not None:
            return sequence <= self.noticed.get(record.model, 0)
        return record.version <= self.published.get(record.model, 0)

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
        """Deliver every tracked record (step 2 of theirs), then publish the waiting promotions
        and notices.

        True when everything is on the broker; False when a tracked record is not (it is sent
        again by the next flush) or a promotion or notice still waits, for Redis or the broker.
        """
        try:
            for tracked in self._tracked:
                if tracked.delivery is None or tracked.failed():
                    tracked.delivery = await self._produce(tracked)
                if tracked.failed():
                    break  # failed at once: the rest waits behind it, in order
            else:
                self._holding = False
            while self._tracked:
                tracked = self._tracked[0]
                assert tracked.delivery is not None  # sent above, or by send()
                delivered: Delivered = await tracked.delivery
                self._tracked.popleft()
                where = (delivered.topic, delivered.partition)
                self._acknowledged[where] = max(self.acknowledged_end(*where), delivered.offset + 1)
        except self._delivery_errors as error:
            self._failed(error)
            return False
        published = await self.publish_waiting()
        if published:
            self._recovered()
        return published

    def drop(self, models: Collection[str]) -> None:
        """Forget the waiting records of ``models`` (their partition went to another worker,
        which replays their events and issues them again)."""
        self._waiting = collections.deque(
            (record, artifact) for record, artifact in self._waiting if record.model not in models
        )
