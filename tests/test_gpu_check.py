"""scripts/gpu-check.sh, rehearsed where there is no GPU: its commands parse, and the wheels it
carries are exactly what the GPU machine's image lacks of what the check imports."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "gpu-check.sh"

# What the check runs: the diffusion stage, its loader and tiny models, the bench, doctor --probe,
# the GPU tests, and the diffusers and transformers classes they build.
IMPORTS = """
import importlib.metadata as metadata, json, sys
import livegen.cli, livegen.doctor, livegen.bench.diffusion, livegen.bench.driver
import livegen.diffusion.batcher, livegen.diffusion.generator, livegen.diffusion.tiny, livegen.diffusion.tools
import livegen.effects.background, livegen.effects.stylize
import tests.gpu.test_diffusion_gpu, tests.test_controlnet
from diffusers import AutoencoderTiny, ControlNetModel, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer
owners = metadata.packages_distributions()
names = {m.split(".")[0] for m in sys.modules} - set(sys.stdlib_module_names)
print(json.dumps(sorted({d for n in names for d in owners.get(n, [])})))
"""


def _script_list(name: str) -> set[str]:
    text = SCRIPT.read_text()
    body = re.search(rf"^{name}=\((.*?)\)", text, re.S | re.M)
    assert body, name
    return {word.lower().replace("_", "-") for word in body.group(1).split()}


def test_the_script_parses_and_explains_itself():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    shown = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True, check=True)
    assert "--prepare" in shown.stdout and "--dry-run" in shown.stdout and "OUT_DIR" in shown.stdout
    wrong = subprocess.run(["bash", str(SCRIPT), "--bogus"], capture_output=True, text=True)
    assert wrong.returncode == 2 and "unknown option" in wrong.stderr


def test_the_carried_wheels_are_what_the_image_lacks_of_what_the_check_imports():
    import json

    out = subprocess.run([sys.executable, "-c", IMPORTS], capture_output=True, text=True, timeout=240,
                         cwd=SCRIPT.parent.parent)
    assert out.returncode == 0, out.stderr[-3000:]
    needed = {d.lower().replace("_", "-") for d in json.loads(out.stdout.splitlines()[-1])} - {"livegen"}
    # huggingface-hub 2 here imports these; the image's huggingface-hub 1.x uses httpx, which it has
    needed -= {"httpx2", "httpcore2", "truststore"}
    carry, image = _script_list("CARRY"), _script_list("IMAGE_HAS")
    missing = sorted(needed - carry - image)
    assert not missing, f"imported by the GPU check, neither carried nor on the image: {missing}"
    assert not carry & image, "a package is carried although the image has it"
