"""`livegen bench`: benchmark scenarios; results go to bench/results/ as JSON plus a summary.

e2e (`e2e.py`): publisher → node → viewer latency against a plain aiortc loopback, same run.
fanout (`fanout.py`): one publisher, many viewers: node CPU and delivered frame rate per viewer
count, encode-once against per-viewer encoding, same run.
pipeline (`pipeline.py`): frames through the engine in this process, per preset: time per stage.
diffusion (`diffusion.py`): the diffusion stage's device timings (UNet, TAESD, compositing).
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from livegen.bench.options import add_arguments as add_e2e_arguments
    from livegen.bench.options import add_fanout_arguments

    scenarios = parser.add_subparsers(dest="scenario", required=True, metavar="scenario")
    add_e2e_arguments(
        scenarios.add_parser("e2e", help="publisher→node→viewer latency vs a plain aiortc loopback")
    )
    add_fanout_arguments(
        scenarios.add_parser("fanout", help="node CPU and frame rate for 1…N viewers, encode-once vs per-viewer")
    )
    from livegen.bench.pipeline import add_arguments as add_pipeline_arguments

    add_pipeline_arguments(
        scenarios.add_parser("pipeline", help="frames through the engine in-process per preset: time per stage")
    )
    from livegen.bench.diffusion import add_arguments as add_diffusion_arguments

    add_diffusion_arguments(
        scenarios.add_parser("diffusion", help="diffusion stage timings per part, sizes, steps and streams")
    )


def run_scenario(args: argparse.Namespace) -> int:
    if args.scenario == "diffusion":
        from livegen.bench import diffusion

        return diffusion.run(args)
    if args.scenario == "pipeline":
        from livegen.bench import pipeline

        return pipeline.run(args)
    if args.scenario == "fanout":
        from livegen.bench import fanout

        return fanout.run(args)
    from livegen.bench import e2e

    return e2e.run(args)
