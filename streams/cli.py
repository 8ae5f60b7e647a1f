"""``driftline``: the command line of the local stack, the workers and the registry."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

Handler = Callable[[argparse.Namespace], int]


def _stack(args: argparse.Namespace) -> int:
    from streams.stack import LocalStack, StackError

    stack = LocalStack(args.state_dir)
    try:
        if args.action == "up":
            endpoints = stack.up(kafka_port=args.kafka_port, redis_port=args.redis_port)
            print(endpoints.shell_lines())
        elif args.action == "status":
            report = stack.status()
            if not report:
                print("the local stack is not running", file=sys.stderr)
                return 1
            print(json.dumps(report, indent=2))
            return 0 if all(s["answers"] for s in report.values()) else 1
        else:
            for line in stack.down(keep_data=args.keep_data, timeout=args.timeout):
                print(line, file=sys.stderr)
    except StackError as error:
        print(f"driftline stack {args.action}: {error}", file=sys.stderr)
        return 2
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="driftline",
        description="Event-driven retraining of ML models on Kafka. Every command reads "
        "KAFKA_BOOTSTRAP_SERVERS and REDIS_URL from the environment.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    stack = commands.add_parser("stack", help="run a local Kafka broker and Redis without Docker")
    stack.add_argument("action", choices=["up", "down", "status"])
    stack.add_argument(
        "--state-dir", type=Path, default=None, help="where the stack keeps state, data and logs"
    )
    stack.add_argument("--kafka-port", type=int, default=None)
    stack.add_argument("--redis-port", type=int, default=None)
    stack.add_argument("--keep-data", action="store_true", help="with down: keep the data folders")
    stack.add_argument(
        "--timeout", type=float, default=20.0, help="with down: seconds before a process is killed"
    )
    stack.set_defaults(handler=_stack)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
