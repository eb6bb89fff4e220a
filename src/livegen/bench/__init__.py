"""`livegen bench`: benchmark scenarios; results go to bench/results/ as JSON plus a summary.

e2e (`e2e.py`): publisher → node → viewer latency against a plain aiortc loopback, same run.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from livegen.bench.options import add_arguments as add_e2e_arguments

    parser.add_argument("scenario", choices=["e2e"], help="e2e: publisher→node→viewer latency vs a plain aiortc loopback")
    add_e2e_arguments(parser)


def run_scenario(args: argparse.Namespace) -> int:
    from livegen.bench import e2e

    return e2e.run(args)
