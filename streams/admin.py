"""Creating driftline's topics with the settings the configuration gives them, and checking, at
every worker's start, that the existing ones still fit what a worker relies on.

Topic settings (:class:`TopicSettings`) come from the ``[topics.<group>]`` tables of the
configuration file (:mod:`streams.config`), one group per kind of topic (:data:`TOPIC_GROUPS`):
its ``replication_factor``, ``min_insync_replicas`` and, for the partitioned groups,
``partitions``. What is left out is resolved against the cluster at start
(:meth:`TopicSettings.resolved`): a replication factor of ``min(3, brokers)`` and a min ISR of
``min(2, replication factor)``, so that a write acknowledged by ``acks=all`` survives the loss of
one broker wherever the cluster is large enough, and a one-broker development stack still works.
The topics that hold what cannot be produced again (the labeled events, the outcomes, the
registry) also refuse an unclean leader election, which would drop acknowledged records.

The labeled events are the training data of every model version, and the outcomes what labels
the events the scorer joins: both are created with infinite retention by default, so that
``driftline registry verify`` and ``driftline registry dataset`` work for any version, however
old. ``[worker] event_retention`` (``DRIFTLINE__worker__event_retention``) sets another one for
topics created from then on.

:func:`ensure_topics` creates what is missing, then checks every topic (:class:`TopicCheck`):

* an **error** (:class:`TopicError`, the worker does not start) where running on would lose or
  misroute records: a topic whose ``min.insync.replicas`` (its own, or the broker's default it
  inherits) is above its replication factor (every ``acks=all`` write fails), unlabeled and
  outcomes topics with different partition counts (a model's events and outcomes would meet in
  different scorers), and a labeled topic whose partition count changed since a model's
  versions were learned (the model's events now go to a partition where no trainer holds its
  state, and are dead-lettered as ``wrong_partition``; found from the lineage of the registry's
  records: :func:`learned_partition_problems`);
* a **warning** (logged, the worker runs on) where the topic is consistent, only less safe or
  otherwise than configured: a replication factor or min ISR below the configured one (the
  cluster grew since the topic was created; raising it is an operator's reassignment, which the
  workers need not wait for), a partition count other than the configured one, an unclean leader
  election allowed, and training data whose records expire (the versions learned from expired
  records can no longer be verified or exported).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import KafkaError, TopicAlreadyExistsError, for_code
from kafka.partitioner.default import murmur2

from streams.settings import SettingsError
from streams.topics import Topics

__all__ = [
    "DEAD_LETTER_MAX_BYTES",
    "FOREVER",
    "KEEP_FOREVER",
    "PARTITIONED_GROUPS",
    "TOPIC_GROUPS",
    "TopicCheck",
    "TopicError",
    "TopicGroup",
    "TopicSettings",
    "ensure_topics",
    "key_partition",
    "learned_partition_problems",
]

FOREVER = -1
"""``retention.ms`` of a topic that keeps its records forever."""
KEEP_FOREVER = {"retention.ms": str(FOREVER), "retention.bytes": str(FOREVER)}
#: A dead letter carries its original bytes in base64 (4/3 of their size): an event just under
#: the broker's default 1 MiB limit must still fit.
DEAD_LETTER_MAX_BYTES = 4 * 1024 * 1024
#: How long a topic the cluster describes without partitions (just created) is described again.
DESCRIBE_TIMEOUT_SECONDS = 10.0
# No error, UNKNOWN_TOPIC_OR_PARTITION, LEADER_NOT_AVAILABLE: a topic the metadata has not caught
# up with yet.
_NOT_PROPAGATED_YET = frozenset({0, 3, 5})
#: Partitions of the events topics unless configured (``[worker] partitions``).
DEFAULT_PARTITIONS = 4
#: Replicas and in-sync replicas a topic gets by default, at most (fewer brokers: one per broker).
DEFAULT_REPLICATION_FACTOR = 3
DEFAULT_MIN_INSYNC_REPLICAS = 2
#: Set on the topics that hold what cannot be produced again.
NO_UNCLEAN_ELECTION = {"unclean.leader.election.enable": "false"}

#: The groups of ``[topics.<group>]``, and the topics each one sets.
TOPIC_GROUPS: Mapping[str, str] = {
    "events": "the labeled and unlabeled events",
    "outcomes": "the outcomes",
    "predictions": "the predictions",
    "registry": "the model registry",
    "dead_letters": "the dead letters",
    "metrics": "the models' metrics",
    "internal": "faust's own topics",
}
#: The groups whose topics take a ``partitions`` setting; the others say why they do not.
PARTITIONED_GROUPS = ("events", "outcomes", "predictions")
FIXED_PARTITIONS: Mapping[str, str] = {
    "registry": "the registry is one partition: its readers need every model's records in the "
    "order they were published (a promotion, then the rollback of it)",
    "dead_letters": "the dead-letter topic is one partition: its records are read in the order "
    "they were refused",
    "metrics": "the metrics topic is one partition: its readers follow each model's metrics in "
    "the order they were published",
    "internal": "faust sizes its own topics (as [worker] partitions says)",
}
#: Settings a group refuses, other than partitions, and why.
REFUSED_SETTINGS: Mapping[tuple[str, str], str] = {
    ("internal", "min_insync_replicas"): "faust creates its own topics with a replication factor "
    "only (it has no setting for their min.insync.replicas): the broker's min.insync.replicas "
    "applies to them",
}


class TopicError(SettingsError):
    """The cluster refused to create a topic as configured, or an existing topic is one that a
    worker must not run on; the message names the setting or the topic and says how to fix it."""


@dataclass(frozen=True)
class TopicGroup:
    """The settings of one group of topics (``[topics.<group>]``); None is the default."""

    replication_factor: int | None = None
    min_insync_replicas: int | None = None
    partitions: int | None = None
    """Of the outcomes and predictions; the events' count is :attr:`TopicSettings.partitions`."""


@dataclass(frozen=True)
class TopicSettings:
    """How driftline's topics are created, and what the start check holds existing ones to.

    ``groups`` holds the ``[topics.<group>]`` tables given; a group left out, or a setting left
    None, takes its default (:meth:`resolved` fills in those that depend on the cluster).
    """

    partitions: int = DEFAULT_PARTITIONS
    """Partitions of the events topics (``[topics.events] partitions``, or ``[worker]
    partitions``), and by default of the outcomes and the predictions."""
    event_retention_ms: int = FOREVER
    """``retention.ms`` of the labeled and outcomes topics (``[worker] event_retention``)."""
    groups: Mapping[str, TopicGroup] = field(default_factory=dict)

    def group(self, name: str) -> TopicGroup:
        """The settings of group ``name`` (one of :data:`TOPIC_GROUPS`)."""
        return self.groups.get(name, TopicGroup())

    def partitions_of(self, name: str) -> int:
        """The partition count topics of group ``name`` are created with."""
        if name in FIXED_PARTITIONS:
            return 1
        return self.group(name).partitions or self.partitions

    def resolved(self, brokers: int) -> TopicSettings:
        """These settings with every replication factor and min ISR filled in for a cluster of
        ``brokers`` brokers.

        Raises :class:`TopicError` for a min ISR above the replication factor it resolves to
        (an explicit one: :mod:`streams.config` refuses that in the file already).
        """
        groups = {}
        for name in TOPIC_GROUPS:
            given = self.group(name)
            factor = given.replication_factor or min(DEFAULT_REPLICATION_FACTOR, brokers)
            insync = given.min_insync_replicas or min(DEFAULT_MIN_INSYNC_REPLICAS, factor)
            if insync > factor:
                default = (
                    ""
                    if given.replication_factor
                    else f", the default: min({DEFAULT_REPLICATION_FACTOR}, brokers), and the "
                    f"cluster has {brokers}"
                )
                raise TopicError(
                    f"topics.{name}.min_insync_replicas={insync} is above the replication factor "
                    f"of {TOPIC_GROUPS[name]} ({factor}{default}): no write to them would ever "
                    f"be acknowledged; lower it, or set [topics.{name}] replication_factor"
                )
            groups[name] = dataclasses.replace(
                given, replication_factor=factor, min_insync_replicas=insync
            )
        return dataclasses.replace(self, groups=groups)


@dataclass(frozen=True)
class TopicCheck:
    """What :func:`ensure_topics` found: the settings resolved against the cluster, and the
    warnings a worker logs (it runs on)."""

    settings: TopicSettings
    warnings: list[str]


@dataclass(frozen=True)
class _Wanted:
    """One topic as the settings want it."""

    name: str
    group: str
    partitions: int
    replication_factor: int
    min_insync_replicas: int
    configs: dict[str, str]


def _wanted(topics: Topics, settings: TopicSettings) -> list[_Wanted]:
    """Every topic of ``topics`` as the (resolved) ``settings`` want it."""
    events = {**_retention(settings.event_retention_ms), **NO_UNCLEAN_ELECTION}
    dead_letters = {**KEEP_FOREVER, "max.message.bytes": str(DEAD_LETTER_MAX_BYTES)}
    by_group: list[tuple[str, str, dict[str, str]]] = [
        (topics.labeled, "events", events),
        (topics.unlabeled, "events", {}),
        # Outcomes share the unlabeled topic's partitioning: a model's events and outcomes meet
        # in the same scorer.
        (topics.outcomes, "outcomes", events),
        (topics.predictions, "predictions", {}),
        (topics.metrics, "metrics", {}),
        (topics.dlq, "dead_letters", dead_letters),
        (topics.registry, "registry", {**KEEP_FOREVER, **NO_UNCLEAN_ELECTION}),
    ]
    wanted = []
    for name, group, configs in by_group:
        factor = settings.group(group).replication_factor
        insync = settings.group(group).min_insync_replicas
        assert factor is not None and insync is not None, "settings not resolved"
        wanted.append(
            _Wanted(
                name,
                group,
                settings.partitions_of(group),
                factor,
                insync,
                {**configs, "min.insync.replicas": str(insync)},
            )
        )
    return wanted


def ensure_topics(
    topics: Topics,
    kafka: Mapping[str, Any],
    settings: TopicSettings | None = None,
    *,
    partitions: int | None = None,
    signing_key: bytes | None = None,
    models: Collection[str] | None = None,
) -> TopicCheck:
    """Create the topics that do not exist yet, then check them all (see the module docstring).

    ``settings`` default to :class:`TopicSettings`'s; ``partitions`` is short for
    ``TopicSettings(partitions=partitions)``, for a caller that sets nothing else. With
    ``signing_key``, the labeled topic is also checked against the model versions of ``models``
    (default: every model) that the registry holds (:func:`learned_partition_problems`).

    Raises :class:`TopicError` for a topic the cluster refused to create, a setting that cannot
    hold on this cluster, or existing topics a worker must not run on (every problem, in one
    line); returns the resolved settings and the warnings.
    """
    if settings is None:
        settings = TopicSettings() if partitions is None else TopicSettings(partitions=partitions)
    elif partitions is not None:
        raise TypeError("ensure_topics: give the partitions in the settings, not beside them")
    admin = KafkaAdminClient(**kafka)
    try:
        try:
            brokers = [b for b in admin.describe_cluster()["brokers"] if not b.get("is_fenced")]
        except KafkaError as error:
            raise TopicError(f"cannot count the brokers of the cluster: {error!r}") from error
        settings = settings.resolved(len(brokers))
        wanted = _wanted(topics, settings)
        _create_missing(admin, wanted, existing=set(admin.list_topics()))
        described = _partitions(admin, [topic.name for topic in wanted])
        configs, unread = _configs(admin, wanted)
    finally:
        admin.close()
    problems, warnings = _check(wanted, described, configs)
    warnings += unread
    problems += _join_problems(topics, described)
    if signing_key is not None:
        moved, unchecked = _registry_problems(
            topics, kafka, signing_key, partitions=len(described[topics.labeled]), models=models
        )
        problems += moved
        warnings += unchecked
    if problems:
        raise TopicError(_one_line(problems))
    return TopicCheck(settings, warnings)


def _partitions(
    admin: KafkaAdminClient, names: list[str], *, timeout: float = DESCRIBE_TIMEOUT_SECONDS
) -> dict[str, list[dict[str, Any]]]:
    """The partitions of each topic of ``names``, as the cluster describes them.

    A topic created a moment ago may be described with no partitions yet, until the controller's
    metadata reaches the broker that answers (seen on a 3-node cluster right after a node came
    back): it is described again, every 0.2 s for up to ``timeout`` seconds, rather than checked
    as a topic without partitions.
    """
    deadline = time.monotonic() + timeout
    while True:
        topics = {topic["name"]: topic for topic in admin.describe_topics(names)}
        described = {name: topic["partitions"] for name, topic in topics.items()}
        # Not one this worker may not describe (its ACLs): that one waits for nothing.
        pending = sorted(
            name
            for name in names
            if not described.get(name)
            and topics.get(name, {}).get("error_code", 0) in _NOT_PROPAGATED_YET
        )
        if not pending:
            return described
        if time.monotonic() >= deadline:
            raise TopicError(
                f"the cluster describes no partitions of {', '.join(pending)} after "
                f"{timeout:.0f} s: retry the start once the cluster's metadata has settled"
            )
        time.sleep(0.2)


def _one_line(problems: list[str]) -> str:
    if len(problems) == 1:
        return problems[0]
    return f"{len(problems)} problems: " + " ".join(
        f"({number}) {problem}" for number, problem in enumerate(problems, 1)
    )


def _retention(retention_ms: int) -> dict[str, str]:
    return KEEP_FOREVER if retention_ms == FOREVER else {"retention.ms": str(retention_ms)}


def _create_missing(admin: KafkaAdminClient, wanted: list[_Wanted], existing: set[str]) -> None:
    """Create the ``wanted`` topics not in ``existing``; raise :class:`TopicError` naming the
    setting the cluster refused."""
    missing = {
        topic.name: {
            "num_partitions": topic.partitions,
            "replication_factor": topic.replication_factor,
            "configs": topic.configs,
        }
        for topic in wanted
        if topic.name not in existing
    }
    if not missing:
        return
    result = admin.create_topics(missing, raise_errors=False)
    refused = []
    by_name = {topic.name: topic for topic in wanted}
    for answer in result["topics"]:
        error = for_code(answer["error_code"])
        # Another worker may have created it meanwhile.
        if answer["error_code"] == 0 or error is TopicAlreadyExistsError:
            continue
        topic = by_name[answer["name"]]
        refused.append(
            f"{_blamed_setting(topic, error.__name__)}: the cluster refused {topic.name}: "
            f"{error.__name__}: {answer.get('error_message') or error.description}"
        )
    if refused:
        raise TopicError(_one_line(refused))
    admin.wait_for_topics(list(missing))


def _blamed_setting(topic: _Wanted, error: str) -> str:
    """The setting(s) of ``topic`` an error of type ``error`` refuses, as ``topics.G.key=value``."""
    settings = {
        "replication_factor": topic.replication_factor,
        "min_insync_replicas": topic.min_insync_replicas,
        "partitions": topic.partitions,
    }
    blamed = {
        "InvalidReplicationFactorError": ["replication_factor"],
        "InvalidPartitionsError": ["partitions"],
        "InvalidConfigurationError": ["min_insync_replicas"],
    }.get(error, list(settings))  # a policy, or another refusal: the whole group
    return ", ".join(f"topics.{topic.group}.{key}={settings[key]}" for key in blamed)


#: The topic configurations the start check reads.
_CHECKED_CONFIGS = ("min.insync.replicas", "retention.ms", "unclean.leader.election.enable")


def _configs(
    admin: KafkaAdminClient, wanted: list[_Wanted]
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The checked configuration of each ``wanted`` topic, with the values the topic inherits
    from the broker; a warning if none could be read.

    A topic the broker refuses to describe to this worker's principal is left out, and goes
    unchecked here, without a warning: the ACLs of a secured deployment let each worker describe
    the configuration of the topics it reads or writes (:mod:`streams.stack.security`), so such
    a topic is one this worker does not use, and the workers that use it check it.
    """
    resources = [
        ConfigResource(
            ConfigResourceType.TOPIC, topic.name, configs=dict.fromkeys(_CHECKED_CONFIGS)
        )
        for topic in wanted
    ]
    try:
        described = admin.describe_configs(resources, config_filter="all")
    except KafkaError as error:
        return {}, [
            f"could not read the configuration of the topics ({error!r}): their "
            "min.insync.replicas, retention and unclean leader election are not checked"
        ]
    # kafka-python leaves a topic's configuration empty when the broker refused to describe it.
    return described.get("topic", {}), []


def _check(
    wanted: list[_Wanted],
    partitions: Mapping[str, list[dict[str, Any]]],
    configs: Mapping[str, Mapping[str, Any]],
) -> tuple[list[str], list[str]]:
    """The problems and warnings of each ``wanted`` topic as the cluster describes it: its
    ``partitions`` (with their replicas) and its ``configs``."""
    problems: list[str] = []
    warnings: list[str] = []
    for topic in wanted:
        found = configs.get(topic.name, {})
        if "min.insync.replicas" in found:
            replicas = min(len(partition["replica_nodes"]) for partition in partitions[topic.name])
            insync = found["min.insync.replicas"]
            _check_replicas(topic, replicas, insync, problems, warnings)
            warnings += _config_warnings(topic, found)
        count = len(partitions[topic.name])
        # The outcomes' count is checked against the unlabeled topic's (_join_problems).
        if count != topic.partitions and topic.group != "outcomes":
            warnings.append(
                f"topic {topic.name} has {count} partitions, topics.{topic.group}.partitions="
                f"{topic.partitions}: the setting applies when driftline creates a topic; an "
                f"operator adds partitions (kafka-topics --alter --topic {topic.name} "
                "--partitions N)"
            )
    return problems, warnings


def _check_replicas(
    topic: _Wanted,
    replicas: int,
    insync: Mapping[str, Any],
    problems: list[str],
    warnings: list[str],
) -> None:
    """Note what is wrong with ``topic``'s ``replicas`` and its min ISR (``insync``, as
    describe_configs gives it: the topic's own, or the broker's default)."""
    name, value = topic.name, int(insync["value"])
    inherited = (
        "" if insync.get("config_source") == "DYNAMIC_TOPIC_CONFIG" else " (the broker's default)"
    )
    alter = f"kafka-configs --alter --entity-type topics --entity-name {name} --add-config"
    if value > replicas:
        problems.append(
            f"topic {name} has min.insync.replicas={value}{inherited} but {replicas} replicas: "
            f"every acknowledged write to it fails; lower it with {alter} min.insync.replicas="
            f"{replicas}, or add replicas with kafka-reassign-partitions"
        )
    elif replicas < topic.replication_factor:
        warnings.append(
            f"topic {name} has {replicas} replicas, below topics.{topic.group}."
            f"replication_factor={topic.replication_factor}: losing a broker can lose its "
            f"records; add replicas with kafka-reassign-partitions --execute (a plan giving each "
            f"partition {topic.replication_factor}), then {alter} "
            f"min.insync.replicas={topic.min_insync_replicas}"
        )
    elif value < topic.min_insync_replicas:
        warnings.append(
            f"topic {name} has min.insync.replicas={value}{inherited}, below topics.{topic.group}."
            f"min_insync_replicas={topic.min_insync_replicas}: a write is acknowledged before "
            f"enough replicas hold it; raise it with {alter} "
            f"min.insync.replicas={topic.min_insync_replicas}"
        )


def _config_warnings(topic: _Wanted, found: Mapping[str, Any]) -> list[str]:
    """Warnings about the unclean leader election and the retention in ``topic``'s ``found``
    configuration."""
    name, warnings = topic.name, []
    alter = f"kafka-configs --alter --entity-type topics --entity-name {name} --add-config"
    unclean = found.get("unclean.leader.election.enable", {}).get("value")
    if "unclean.leader.election.enable" in topic.configs and unclean == "true":
        warnings.append(
            f"topic {name} allows an unclean leader election, which drops acknowledged records "
            f"when a replica out of sync becomes leader; forbid it with {alter} "
            "unclean.leader.election.enable=false"
        )
    # The training data (the labeled events, the outcomes: the events topics with a retention
    # set) is what a version is verified and exported from.
    if topic.group in ("events", "outcomes") and "retention.ms" in topic.configs:
        warnings += _retention_warnings(name, found.get("retention.ms", {}))
    return warnings


def _retention_warnings(name: str, retention: Mapping[str, Any]) -> list[str]:
    """A warning if the training data in topic ``name`` expires (``retention``: its
    ``retention.ms`` as describe_configs gives it)."""
    keep = f"keep them with kafka-configs --alter --topic {name} --add-config retention.ms=-1"
    if retention.get("config_source") != "DYNAMIC_TOPIC_CONFIG":
        return [
            f"topic {name} has no retention of its own: it keeps its records as long as the "
            "broker's log.retention.ms/hours says (7 days unless the broker is configured "
            "otherwise), after which the model versions learned from them can no longer be "
            f"verified or exported (driftline registry verify, dataset); {keep}"
        ]
    retention_ms = int(retention["value"])
    if retention_ms == FOREVER:
        return []
    return [
        f"topic {name} keeps its records for {retention_ms / 86_400_000:g} days "
        f"(retention.ms={retention_ms}): a model version learned from records older than that "
        f"can no longer be verified or exported (driftline registry verify, dataset); {keep}"
    ]


def _join_problems(topics: Topics, partitions: Mapping[str, list[Any]]) -> list[str]:
    """The unlabeled and outcomes topics must have as many partitions (the scorer's join)."""
    counts = {name: len(partitions[name]) for name in (topics.unlabeled, topics.outcomes)}
    if counts[topics.unlabeled] == counts[topics.outcomes]:
        return []
    smaller, larger = sorted(counts, key=counts.__getitem__)
    return [
        f"topic {topics.unlabeled} has {counts[topics.unlabeled]} partitions and "
        f"{topics.outcomes} {counts[topics.outcomes]}: the scorer joins a model's events and "
        "outcomes in the partition its key maps to, which needs as many on both; add "
        f"partitions with kafka-topics --alter --topic {smaller} --partitions {counts[larger]} "
        f"(and set [topics.events] and [topics.outcomes] partitions = {counts[larger]})"
    ]


def _registry_problems(
    topics: Topics,
    kafka: Mapping[str, Any],
    key: bytes,
    *,
    partitions: int,
    models: Collection[str] | None,
) -> tuple[list[str], list[str]]:
    """:func:`learned_partition_problems` of the registry's records, or a warning if it cannot
    be read."""
    from streams.registry.records import read_registry

    try:
        records = list(read_registry(topics.registry, kafka, key=key))
    except (KafkaError, TimeoutError) as error:
        return [], [
            f"could not read {topics.registry} ({error!r}): the partitions of {topics.labeled} "
            "are not checked against the model versions learned from it"
        ]
    lineages = [(record.model, record.lineage) for record in records]
    return learned_partition_problems(
        topics.labeled, lineages, partitions=partitions, models=models
    ), []


def key_partition(key: str, partitions: int) -> int:
    """The partition of ``partitions`` a record keyed ``key`` goes to: Kafka's default
    partitioner (murmur2), that of its Java client, kafka-python and driftline's producer."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def learned_partition_problems(
    labeled: str,
    lineages: Iterable[tuple[str, Mapping[str, Any]]],
    *,
    partitions: int,
    models: Collection[str] | None = None,
) -> list[str]:
    """The models whose versions were learned from another partition of the topic ``labeled``
    than the one their key maps to now that it has ``partitions`` partitions (one line).

    ``lineages`` are the ``(model, lineage)`` of the registry's records in log order; a model's
    last record whose lineage names a partition of ``labeled`` (``topic[partition]``) says where
    its versions are learned. ``models`` (default: all) are those checked.

    Derived from the lineage the records always carried, rather than from a partition count
    recorded in new records: it checks the records published before this check existed (still
    signed as they were), and it refuses exactly the models that moved. A topic that grew
    while every model kept its partition is no problem: each trainer still finds its models'
    events, and state, where they were.
    """
    learned: dict[str, int] = {}
    for model, lineage in lineages:
        partition = _labeled_partition(labeled, lineage)
        if partition is not None:
            learned[model] = partition
    moved = {
        model: (partition, key_partition(model, partitions))
        for model, partition in sorted(learned.items())
        if (models is None or model in models) and key_partition(model, partitions) != partition
    }
    if not moved:
        return []
    # The counts that keep every model where it was learned: what the topic had, most likely.
    earlier = [
        count
        for count in range(1, partitions)
        if all(key_partition(model, count) == p for model, p in learned.items())
    ]
    shown = list(moved.items())[:3]
    which = "; ".join(
        f"{model} was learned from {labeled}[{was}], its events now go to [{now}]"
        for model, (was, now) in shown
    )
    more = f" (and {len(moved) - len(shown)} more models)" if len(moved) > len(shown) else ""
    before = f" (it had {' or '.join(map(str, earlier[-2:]))})" if earlier else ""
    return [
        f"topic {labeled} has {partitions} partitions, other than when these models' versions "
        f"were learned: {which}{more}; the trainer that holds a model's state would never see "
        f"its events again (dead-lettered as wrong_partition). Kafka cannot take partitions "
        f"away: recreate {labeled} with the count it had{before}, after copying its records "
        "(the training data of those versions), or deploy under a new DRIFTLINE_TOPIC_PREFIX"
    ]


def _labeled_partition(labeled: str, lineage: Mapping[str, Any]) -> int | None:
    """The partition of ``labeled`` a record's ``lineage`` was learned from, if it names one."""
    sources = [lineage.get("source")] + [r.get("source") for r in lineage.get("ranges", ())]
    for source in sources:
        topic, bracket, rest = str(source).rpartition("[")
        if bracket and topic == labeled and rest.endswith("]") and rest[:-1].isdigit():
            return int(rest[:-1])
    return None
