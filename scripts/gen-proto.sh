#!/usr/bin/env bash
# Regenerate the gRPC code of proto/livegen/v1/livegen.proto into src/livegen/grpcapi/ (or into
# the folder given as $1: tests/test_grpc.py does that to check the committed code is current).
#
# Needs grpcio-tools 1.62.x (the test extra): its protoc (25.x) writes code that runs on
# protobuf 4.25, which mediapipe 0.10.21 requires; grpcio-tools >= 1.63 writes code that
# demands protobuf >= 5.26 at import.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
out="${1:-src/livegen/grpcapi}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$PYTHON" -m grpc_tools.protoc -I proto \
    --python_out="$work" --pyi_out="$work" --grpc_python_out="$work" \
    proto/livegen/v1/livegen.proto
mkdir -p "$out"
# protoc names modules after the proto's path (livegen/v1/); the code lives in livegen.grpcapi,
# so the one import between the two generated modules is pointed there
sed -e 's/^from livegen\.v1 import livegen_pb2 as /from livegen.grpcapi import livegen_pb2 as /' \
    "$work/livegen/v1/livegen_pb2_grpc.py" > "$out/livegen_pb2_grpc.py"
cp "$work/livegen/v1/livegen_pb2.py" "$work/livegen/v1/livegen_pb2.pyi" "$out/"
