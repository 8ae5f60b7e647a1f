"""What a model does when drift is detected, and the notices that say so.

A `DriftResponder` turns each `trainers.drift.Detection` into the actions its model's
``[models.NAME.drift]`` table lists (see `trainers.drift.DriftSpec`), and numbers a `Notice` for
the detection and for each action, to be published as registry records with their cause:

* ``reset``: a fresh copy of a candidate's specification (``drift.reset``, else the champion,
  else the candidate that drifted) starts learning from the next event under the name
  ``"<name>@reset<k>"`` (``k`` counts the model's copies: 1, 2, ...) and joins the competition
  as a challenger; it competes once it has scored ``policy.min_samples`` events, like any fresh
  candidate. Beyond ``max_reset_copies`` copies, the new one replaces the oldest copy that is
  not the champion.
* ``refit``: every live ``sklearn_window`` candidate cuts a refit job of its window now (see
  `trainers.candidates.SklearnWindowCandidate`).
* ``shorten_cooldown``: what remains of the cooldown since the last promotion becomes at most
  ``cooldown_after_drift`` events, so that a challenger better since the drift can be promoted
  sooner.

Actions are rate-limited: a detection fewer than ``min_events_between_actions`` events after the
last detection that acted takes none, and each of its actions is noticed as *suppressed*, with
the reason. Detections themselves are never suppressed.

Notices are the trainer's output, not its I/O: the worker publishes them exactly once (see
`streams.workers.outbox`), which they allow by their identity, ``(model, sequence)``: the
sequence numbers count 1, 2, 3, ... per model in the order the notices were made, which is a
pure function of the events learned, so a replay after a crash numbers them alike.

Parameters of a `Notice`
------------------------
``kind`` is ``"drift"`` (one per detection: the detector, the candidate, the position and the
evidence) or ``"action"`` (``action`` its name, ``cause`` the sequence number of the drift notice,
``suppressed`` whether the rate limit stopped it, and what it did).

Examples
--------
>>> from trainers.actions import DriftResponder
>>> from trainers.drift import Detection, DriftSpec
>>> spec = DriftSpec.from_dict(
...     {"actions": ["reset", "shorten_cooldown"], "min_events_between_actions": 500},
...     ["nb", "lr"], task="classification", metric="accuracy",
... )
>>> responder = DriftResponder("sea")
>>> first = Detection("nb", "ADWIN", event=1000, source="s", position=999)
>>> plan = responder.respond(first, spec, champion="nb", tables={"nb": {"name": "nb"}})
>>> [(n.sequence, n.kind, n.candidate) for n in plan.notices]
[(1, 'drift', 'nb'), (2, 'action', 'nb@reset1'), (3, 'action', 'nb')]
>>> [(a.action, a.candidate, a.replaces) for a in plan.actions]
[('reset', 'nb@reset1', None), ('shorten_cooldown', 'nb', None)]

The next detection comes 200 events later, inside the rate limit:

>>> later = Detection("nb", "ADWIN", event=1200, source="s", position=1199)
>>> plan = responder.respond(later, spec, champion="nb", tables={"nb": {"name": "nb"}})
>>> plan.actions, [(n.sequence, n.evidence["suppressed"]) for n in plan.notices[1:]]
((), [(5, True), (6, True)])
>>> plan.notices[1].reason
'reset suppressed: 200 events since the last action (event 1000), fewer than 500'

References
----------
[^1]: Gama, J., Žliobaitė, I., Bifet, A., Pechenizkiy, M. and Bouchachia, A., 2014. A survey
    on concept drift adaptation. ACM Computing Surveys, 46(4), 44 (informed adaptation:
    detect, then reset or retrain the model on recent data).

"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from trainers.drift import Detection, DriftSpec

__all__ = ["RESET_MARK", "Action", "DriftResponder", "Notice", "Plan", "completed"]

#: Separates a reset copy's base name from its number, as in ``"lr@reset2"``.
RESET_MARK = "@reset"


@dataclass(frozen=True)
class Notice:
    """A drift detection or a drift action, ready to publish as a registry record.

    Parameters
    ----------
    model
        The model's name.
    sequence
        Its number among the model's notices (1, 2, ...): with `model`, its identity.
    kind
        ``"drift"`` or ``"action"``.
    candidate
        The candidate that drifted (``drift``), or the one the action is about.
    reason
        One human-readable sentence.
    evidence
        For ``drift``: ``detector`` and the detector's evidence; for ``action``: ``action``,
        ``cause`` (the drift notice's sequence), ``suppressed`` and what it did.
    lineage
        Where it happened: ``source``, ``position`` and ``event`` (the trainer's event count).

    """

    model: str
    sequence: int
    kind: str
    candidate: str
    reason: str
    evidence: dict[str, Any]
    lineage: dict[str, Any]


@dataclass(frozen=True)
class Action:
    """One action the trainer carries out on a detection.

    Parameters
    ----------
    action
        ``"reset"``, ``"refit"`` or ``"shorten_cooldown"``.
    candidate
        For ``reset``, the new copy's name; otherwise the candidate that drifted.
    table
        For ``reset``, the copy's specification.
    replaces
        For ``reset``, the older copy it replaces, if any.
    notice
        The index of the action's notice in `Plan.notices`, whose evidence the trainer
        completes with what the action did (e.g. the refit jobs cut).

    """

    action: str
    candidate: str
    table: dict[str, Any] | None = None
    replaces: str | None = None
    notice: int = 0


@dataclass(frozen=True)
class Plan:
    """What to do about one detection: the `actions` to carry out and the `notices` to publish."""

    actions: tuple[Action, ...]
    notices: tuple[Notice, ...]


@dataclass
class DriftResponder:
    """Decides a model's actions on drift; keeps the rate limit, the copies and the numbering.

    Parameters
    ----------
    model
        The model's name.

    """

    model: str
    #: The last notice's sequence number (0 before the first).
    sequence: int = 0
    #: The trainer's event count at the last detection that acted.
    last_action_event: int | None = None
    #: Reset copies made so far (numbers the next one).
    copies_made: int = 0
    #: The live reset copies, oldest first.
    copies: list[str] = field(default_factory=list)

    def respond(
        self,
        detection: Detection,
        spec: DriftSpec,
        *,
        champion: str | None,
        tables: Mapping[str, dict[str, Any]],
    ) -> Plan:
        """The plan for `detection` under `spec`, given the `champion` and the specification
        of every live candidate by name (`tables`, to copy one for a reset)."""
        lineage = {
            "source": detection.source,
            "position": detection.position,
            "event": detection.event,
        }
        drift = self._notice(
            "drift",
            detection.candidate,
            f"{detection.detector} detected a drift in the loss of {detection.candidate!r} "
            f"at event {detection.event}"
            + ("" if detection.worsened else ": the loss fell, no action taken"),
            {"detector": detection.detector, **detection.evidence},
            lineage,
        )
        notices = [drift]
        actions = []
        if not detection.worsened:
            return Plan((), (drift,))
        since = None if self.last_action_event is None else detection.event - self.last_action_event
        limited = since is not None and since < spec.min_events_between_actions
        if spec.actions and not limited:
            self.last_action_event = detection.event
        for name in spec.actions:
            cause = {"action": name, "cause": drift.sequence, "suppressed": limited}
            if limited:
                notices.append(
                    self._notice(
                        "action",
                        detection.candidate,
                        f"{name} suppressed: {since} events since the last action (event "
                        f"{self.last_action_event}), fewer than {spec.min_events_between_actions}",
                        cause,
                        lineage,
                    )
                )
                continue
            action = self._action(name, detection, spec, champion, tables, len(notices))
            notices.append(
                self._notice(
                    "action",
                    action.candidate,
                    _describe(action, drift.sequence),
                    {**cause, **({} if action.replaces is None else {"replaces": action.replaces})},
                    lineage,
                )
            )
            actions.append(action)
        return Plan(tuple(actions), tuple(notices))

    def forget(self, names: set[str] | frozenset[str]) -> None:
        """Stop counting the copies in `names` (dropped or replaced) among the live ones."""
        self.copies = [name for name in self.copies if name not in names]

    def copy_tables(self, configured: Mapping[str, dict[str, Any]]) -> list[dict[str, Any]]:
        """The specifications of the live copies whose base candidate is in `configured` (by
        name): a copy lives as long as what it copies is configured."""
        return [
            {**configured[base], "name": name}
            for name in self.copies
            if (base := name.split(RESET_MARK)[0]) in configured
        ]

    def _action(
        self,
        name: str,
        detection: Detection,
        spec: DriftSpec,
        champion: str | None,
        tables: Mapping[str, dict[str, Any]],
        notice: int,
    ) -> Action:
        if name != "reset":
            return Action(name, detection.candidate, notice=notice)
        source = spec.reset or champion or detection.candidate
        base = source.split(RESET_MARK)[0]
        self.copies_made += 1
        copy_name = f"{base}{RESET_MARK}{self.copies_made}"
        replaces = None
        # A copy that became the champion graduated: it is no longer replaced.
        replaceable = [copy for copy in self.copies if copy != champion]
        if len(self.copies) >= spec.max_reset_copies and replaceable:
            replaces = replaceable[0]
            self.copies.remove(replaces)
        self.copies.append(copy_name)
        table = {**tables[source], "name": copy_name}
        return Action("reset", copy_name, table=table, replaces=replaces, notice=notice)

    def _notice(
        self,
        kind: str,
        candidate: str,
        reason: str,
        evidence: dict[str, Any],
        lineage: dict[str, Any],
    ) -> Notice:
        self.sequence += 1
        return Notice(self.model, self.sequence, kind, candidate, reason, evidence, lineage)


def _describe(action: Action, cause: int) -> str:
    if action.action == "reset":
        replacing = "" if action.replaces is None else f", replacing {action.replaces!r}"
        return f"reset: {action.candidate!r} starts afresh{replacing} (drift notice {cause})"
    if action.action == "refit":
        return f"refit of every window candidate (drift notice {cause})"
    return f"cooldown shortened (drift notice {cause})"


def completed(notice: Notice, **evidence: Any) -> Notice:
    """`notice` with `evidence` added (what the trainer's action did)."""
    return dataclasses.replace(notice, evidence={**notice.evidence, **evidence})
