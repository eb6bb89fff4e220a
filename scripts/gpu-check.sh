#!/usr/bin/env bash
# The diffusion stage proved on a CUDA machine in a few minutes, with one command.
#
#   scripts/gpu-check.sh --prepare    here, with PyPI: fill .gpu-check/wheels with what a GPU machine
#                                     that already has Python 3.12 + PyTorch lacks (and livegen's own
#                                     wheel), at most 60 MiB, then --dry-run
#   scripts/gpu-check.sh --dry-run    here: the wheels install for CPython 3.12 on manylinux x86-64
#                                     with no index (pip's dry run for that interpreter: this machine
#                                     has no 3.12), and every requirement they name is carried or on
#                                     the GPU machine's image
#   scripts/gpu-check.sh OUT_DIR      on the GPU machine (no internet needed): install the wheels into
#                                     a folder of their own, then, within 8 minutes, run
#                                       livegen doctor --probe (tiny model, compile and CUDA graphs on),
#                                       pytest -m gpu (tests/gpu and the ControlNet GPU test: full-size
#                                         random-weight sd-turbo),
#                                       livegen bench diffusion (512x512 and 768x432; 1 and 2 steps;
#                                         1, 4 and 8 streams; eager, CUDA graphs, compile; prompt-change
#                                         timing), the same with a ControlNet (canny),
#                                     and write what each step printed and its JSON results to OUT_DIR,
#                                     with a summary in OUT_DIR/gpu-check.json.
#
# Any CUDA machine will do: with internet, `--prepare` can run on it too; without, copy the checkout
# with its .gpu-check/ folder over. PYTHON picks the interpreter (default python3).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WHEELS=${GPU_CHECK_WHEELS:-$ROOT/.gpu-check/wheels}
PY=${PYTHON:-python3}
MAX_MIB=60
# What the GPU image lacks of what livegen's diffusion stage, its GPU tests and its bench import
# (tests/test_gpu_check.py keeps this list honest). Versions are the project's own, read from .venv.
CARRY=(diffusers lazy-importer pydantic pydantic-core annotated-types typing-inspection importlib-metadata av)
# Python packages the GPU image already has that the carried wheels require.
IMAGE_HAS=(torch numpy pillow opencv-python-headless huggingface-hub transformers safetensors tokenizers
  filelock regex requests zipp pyyaml typing-extensions nvidia-ml-py prometheus-client pytest
  pytest-timeout hypothesis aiohttp packaging tqdm httpx httpcore anyio h11 certifi charset-normalizer
  idna urllib3 iniconfig pluggy pygments jinja2 markupsafe sympy mpmath scipy setuptools fsspec)
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)

say() { printf '[gpu-check] %s\n' "$*" >&2; }

prepare() {
  local venv_python="$ROOT/.venv/bin/python"
  [[ -x $venv_python ]] || { say "no .venv here: run 'make install' first (the pins come from it)"; exit 2; }
  rm -rf "$WHEELS" && mkdir -p "$WHEELS"
  local pins=()
  for name in "${CARRY[@]}"; do
    pins+=("$name==$("$venv_python" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")")
  done
  say "downloading ${pins[*]}"
  "$venv_python" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${PLATFORMS[@]}" -d "$WHEELS" "${pins[@]}"
  say "building livegen's own wheel"
  "$venv_python" -m pip wheel --quiet --no-deps -w "$WHEELS" "$ROOT"
  local mib=$(( $(du -sk "$WHEELS" | cut -f1) / 1024 ))
  say "$(ls "$WHEELS" | wc -l) wheels, $mib MiB in $WHEELS"
  (( mib <= MAX_MIB )) || { say "over the $MAX_MIB MiB that can be carried"; exit 1; }
  dry_run
}

dry_run() {
  local venv_python="$ROOT/.venv/bin/python" target
  [[ -d $WHEELS ]] || { say "no wheels in $WHEELS: run --prepare first"; exit 2; }
  target=$(mktemp -d)
  trap 'rm -rf "$target"' RETURN
  say "dry run: installing for CPython 3.12 (manylinux x86-64) from $WHEELS alone"
  "$venv_python" -m pip install --quiet --dry-run --no-index --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp "${PLATFORMS[@]}" --target "$target" "$WHEELS"/*.whl
  say "dry run: every requirement of the carried wheels is carried or on the image"
  "$venv_python" - "$WHEELS" "${IMAGE_HAS[*]}" <<'PY'
import re
import sys
import zipfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

folder, image = Path(sys.argv[1]), {canonicalize_name(n) for n in sys.argv[2].split()}
wheels = sorted(folder.glob("*.whl"))
carried = {canonicalize_name(w.name.split("-")[0]) for w in wheels}
environment = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
               "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython",
               "platform_python_implementation": "CPython", "os_name": "posix", "extra": ""}
missing = []
for wheel in wheels:
    if wheel.name.startswith("livegen-"):
        continue  # the whole node's needs; the GPU check imports only what CARRY lists (its test checks)
    with zipfile.ZipFile(wheel) as archive:
        meta = next(n for n in archive.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n))
        lines = archive.read(meta).decode().splitlines()
    for line in lines:
        if not line.startswith("Requires-Dist:"):
            continue
        requirement = Requirement(line.split(":", 1)[1].strip())
        if requirement.marker is not None and not requirement.marker.evaluate(environment):
            continue  # an extra, or another platform
        name = canonicalize_name(requirement.name)
        if name not in carried and name not in image:
            missing.append(f"{wheel.name} needs {requirement}")
if missing:
    print("\n".join(missing))
    sys.exit(1)
print(f"{len(wheels)} wheels, their requirements all met")
PY
}

run_step() {  # run_step NAME SECONDS COMMAND...: time-limited, output to OUT/NAME.txt, result recorded
  local name=$1 limit=$2 started rc
  shift 2
  started=$(date +%s)
  say "$name (at most ${limit} s)"
  set +e
  timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.txt" 2>&1
  rc=$?
  set -e
  STEPS+=("{\"step\": \"$name\", \"exit_code\": $rc, \"seconds\": $(( $(date +%s) - started )), \"timed_out\": $([[ $rc == 124 || $rc == 137 ]] && echo true || echo false)}")
  say "$name: exit code $rc after $(( $(date +%s) - started )) s"
  tail -n 5 "$OUT/$name.txt" >&2 || true
}

check() {
  OUT=$(mkdir -p "$1" && cd "$1" && pwd)
  [[ -d $WHEELS ]] || { say "no wheels in $WHEELS: run --prepare where there is internet"; exit 2; }
  local site=${GPU_CHECK_SITE:-/tmp/livegen-gpu-check-site}
  rm -rf "$site"
  "$PY" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$WHEELS"/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
  cd "$ROOT"
  "$PY" -c "import torch, livegen; assert torch.cuda.is_available(), 'torch sees no CUDA device'; \
print('livegen from', livegen.__file__, '| torch', torch.__version__, '| GPU', torch.cuda.get_device_name(0))" >&2
  STEPS=()
  local started tiny="$OUT/tiny-model"
  started=$(date +%s)
  "$PY" -c "import sys; from pathlib import Path; from livegen.diffusion import tiny; \
tiny.build_folder(Path(sys.argv[1]), controlnet=True)" "$tiny"
  LIVEGEN_DIFFUSION__MODEL=$tiny LIVEGEN_DIFFUSION__TAESD='' LIVEGEN_DIFFUSION__COMPILE=true \
    LIVEGEN_DIFFUSION__CUDA_GRAPHS=true run_step doctor-probe 120 "$PY" -m livegen doctor --probe
  rm -rf "$tiny"
  run_step pytest-gpu 150 "$PY" -m pytest tests/gpu tests/test_controlnet.py -m gpu --noconftest -p no:cacheprovider -q \
    -o addopts= --junitxml "$OUT/pytest-gpu.xml"
  run_step bench-diffusion 270 "$PY" -m livegen bench diffusion --sizes 512x512,768x432 --steps 1,2 \
    --streams 1,4,8 --modes eager,cudagraph,compile --frames 60 --warmup 10 --prompt-changes 5 \
    --budget-s 200 --output "$OUT"
  run_step bench-controlnet 110 "$PY" -m livegen bench diffusion --controlnet canny --sizes 512x512 \
    --steps 1 --streams 1,8 --modes eager,cudagraph --frames 40 --warmup 5 --prompt-changes 3 \
    --budget-s 80 --output "$OUT/controlnet"
  local IFS=,
  printf '{"script": "scripts/gpu-check.sh", "seconds": %d, "steps": [%s]}\n' \
    "$(( $(date +%s) - started ))" "${STEPS[*]}" >"$OUT/gpu-check.json"
  say "summary in $OUT/gpu-check.json"
}

case "${1:-}" in
  --prepare) prepare ;;
  --dry-run) dry_run ;;
  -h | --help | "") sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' ; [[ -n ${1:-} ]] ;;
  -*) say "unknown option $1 (see --help)"; exit 2 ;;
  *) check "$1" ;;
esac
