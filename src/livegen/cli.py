"""`livegen serve | bench | process | doctor | models`: parse arguments, load settings, run."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from livegen.errors import ConfigError

log = logging.getLogger("livegen")


def _settings(args: argparse.Namespace):
    from livegen.config import load_settings

    overrides: dict = {}
    if getattr(args, "host", None):
        overrides.setdefault("server", {})["host"] = args.host
    if getattr(args, "port", None) is not None:
        overrides.setdefault("server", {})["port"] = args.port
    return load_settings(args.config, overrides=overrides)


def cmd_serve(args: argparse.Namespace) -> int:
    from livegen.api import create_app
    from livegen.api.serve import run

    settings = _settings(args)
    logging.getLogger().setLevel(settings.log_level)
    # The node never downloads models: Hugging Face libraries stay offline unless told otherwise
    # (`livegen models pull` is the one command that fetches).
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    host, port = settings.server.host, settings.server.port
    if not settings.auth.publish_tokens and not _is_loopback(host) and not args.insecure:
        raise ConfigError(
            f"refusing to listen on {host} with no auth.publish_tokens: anyone could publish. "
            "Configure tokens, or pass --insecure to accept that."
        )
    auth, grpc_api = settings.auth, settings.grpc
    if grpc_api.enabled and not (auth.publish_tokens or auth.operator_token) and not _is_loopback(grpc_api.host):
        if not args.insecure:
            raise ConfigError(
                f"refusing to serve the gRPC frame API on {grpc_api.host} with no tokens: anyone could use "
                "the node's device. Configure auth tokens, or pass --insecure to accept that."
            )
    app = create_app(settings)
    log.info("livegen on http://%s:%d/ (webcam page), /watch/<stream>, /api/streams", host, port)
    run(app, host, port)  # SIGTERM/SIGINT: drain for server.drain_s, then stop
    return 0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cmd_doctor(args: argparse.Namespace) -> int:
    from livegen.doctor import report

    print(report(_settings(args), probe=args.probe))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from livegen.bench import run_scenario

    return run_scenario(args)


def cmd_process(args: argparse.Namespace) -> int:
    from livegen.files.command import run

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="livegen", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the node")
    serve.add_argument("--config", type=Path, help="YAML settings file (default: configs/default.yaml)")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8080)")
    serve.add_argument(
        "--insecure", action="store_true", help="allow a non-loopback address without publish tokens"
    )
    serve.set_defaults(func=cmd_serve)

    doctor = sub.add_parser("doctor", help="report devices, codecs and settings")
    doctor.add_argument("--config", type=Path)
    doctor.add_argument(
        "--probe", action="store_true",
        help="build the diffusion stage and run frames through it: which UNet path runs, what fell back",
    )
    doctor.set_defaults(func=cmd_doctor)

    from livegen.diffusion.tools import add_models_arguments, cmd_models

    models = sub.add_parser("models", help="fetch diffusion models into the local cache (the only download)")
    add_models_arguments(models)
    models.set_defaults(func=cmd_models)

    from livegen.bench import add_arguments

    bench = sub.add_parser("bench", help="run a benchmark scenario and record it under bench/results/")
    add_arguments(bench)
    bench.set_defaults(func=cmd_bench)

    from livegen.files.command import add_arguments as add_process_arguments

    process = sub.add_parser("process", help="a video file through a preset or a chain of effects, every frame")
    add_process_arguments(process)
    process.set_defaults(func=cmd_process)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"livegen: {exc.detail}", file=sys.stderr)
        return 2
