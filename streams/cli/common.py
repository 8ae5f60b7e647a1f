"""What every ``driftline`` command shares: refusing in one line, and finding the broker fast.

A user's mistake (a setting, a file, an unreachable broker) is reported as one line on stderr,
``driftline COMMAND: what is wrong``, with exit status 2: a traceback would bury the one
sentence that says what to fix. Commands that talk to Kafka first check that a broker answers
within a few seconds, because kafka-python would otherwise retry an unreachable address for
30 s and then raise a ``KafkaTimeoutError`` that does not say which setting is wrong.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from streams.settings import BOOTSTRAP_SERVERS_ENV, SettingsError

__all__ = ["BROKER_TIMEOUT", "BrokerUnreachableError", "refuse", "require_broker"]

#: Seconds a command waits for the broker to answer before giving up.
BROKER_TIMEOUT = 5.0
#: Exit status of a command refused for a user's mistake (argparse uses it for bad arguments).
USAGE_ERROR = 2


class BrokerUnreachableError(SettingsError):
    """No Kafka broker answers at ``KAFKA_BOOTSTRAP_SERVERS``."""


def refuse(command: str, error: BaseException | str) -> int:
    """Print ``driftline COMMAND: ERROR`` on one line to stderr; returns the exit status 2."""
    text = " ".join(str(error).split())  # a multi-line message would read as several errors
    print(f"driftline {command}: {text}", file=sys.stderr)
    return USAGE_ERROR


def require_broker(kafka: Mapping[str, Any], *, timeout: float = BROKER_TIMEOUT) -> None:
    """Raise :class:`BrokerUnreachableError` unless a broker answers within ``timeout`` seconds.

    ``kafka`` holds kafka-python settings (:attr:`streams.settings.Settings.kafka`).
    """
    from streams.stack.broker import connection_problem

    security = dict(kafka)
    bootstrap = security.pop("bootstrap_servers")
    problem = connection_problem(bootstrap, timeout_ms=int(timeout * 1000), **security)
    if problem is not None:
        raise BrokerUnreachableError(
            f"no Kafka broker answers at {bootstrap} within {timeout:g} s ({problem}): check "
            f"{BOOTSTRAP_SERVERS_ENV} and KAFKA_SECURITY_*/KAFKA_SASL_*/KAFKA_SSL_* (or start a "
            "local stack with 'eval \"$(driftline stack up)\"')"
        )
