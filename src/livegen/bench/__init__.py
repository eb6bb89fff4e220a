"""`livegen bench`: benchmark scenarios; results go to bench/results/ as JSON plus a summary."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scenario", choices=["e2e"], help="e2e: publisher→node→viewer latency vs a plain aiortc loopback")


def run_scenario(args: argparse.Namespace) -> int:
    raise NotImplementedError
