"""The shape of the source tree: straight layers, no import cycles, aiortc's private names only in
the adapter, files of a readable size. These read the code as text (ast), so they fail with the
offending file and import named."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

from livegen.rtc import aiortc_adapter

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = SRC / "livegen"
MAX_LINES = 450
BASE = {"config", "errors", "observability", "flow", "resources"}
"""Packages and modules every layer may use."""
ALLOWED = {
    # package: the other first-level packages it may import (besides BASE)
    "api": {"hub", "relay", "rtc", "engine", "effects", "diffusion", "media", "cluster", "jobs", "grpcapi", "runtime", "files"},
    "grpcapi": set(),
    "runtime": {"engine", "effects", "diffusion", "media"},
    "jobs": {"files", "engine", "relay", "media"},
    "files": {"engine", "effects", "media", "runtime"},
    "cluster": set(),
    "hub": {"relay", "rtc", "engine", "effects", "media"},
    "relay": {"rtc", "media"},
    "rtc": set(),
    "engine": {"effects", "media"},
    "diffusion": {"effects", "media"},
    "effects": {"media"},
    "media": set(),
    "observability": {"flow"},
    "flow": set(),
    "config": {"errors", "resources"},
    "errors": set(),
    "resources": set(),
}
ADAPTER = "livegen.rtc.aiortc_adapter"


def _modules() -> dict[str, Path]:
    modules = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


MODULES = _modules()


def _imports(module: str, path: Path) -> set[str]:
    """The livegen modules `module` imports (a `from package import submodule` names the submodule)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for alias in node.names:
                targets.append(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target.startswith("livegen") and target != module:
                found.add(target)
    return found


GRAPH = {module: _imports(module, path) for module, path in MODULES.items()}


def _first_level(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_between_files():
    assert _cycles(GRAPH) == []


def test_no_import_cycle_between_packages():
    packages: dict[str, set[str]] = defaultdict(set)
    for module, targets in GRAPH.items():
        packages[_first_level(module)] |= {_first_level(t) for t in targets} - {_first_level(module)}
    assert _cycles(packages) == []


def test_each_layer_imports_only_the_layers_below_it():
    wrong = []
    for module, targets in GRAPH.items():
        layer = _first_level(module)
        if layer not in ALLOWED:
            continue  # the tools on top (cli, bench, doctor, testing) may use any layer
        for target in targets:
            other = _first_level(target)
            if other != layer and other not in BASE | ALLOWED[layer]:
                wrong.append(f"{module} imports {target}")
    assert wrong == []


def test_rtc_reaches_neither_the_engine_nor_the_encoder():
    rtc = [m for m in GRAPH if m.startswith("livegen.rtc")]
    assert rtc
    assert [(m, t) for m in rtc for t in GRAPH[m] if t.startswith(("livegen.engine", "livegen.media"))] == []


def _private_uses(path: Path) -> list[str]:
    """`x._name` (x not self/cls), `getattr(x, "_name")` and `from aiortc... import _name` in a
    file that imports aiortc or aioice."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    uses_aiortc = any(
        (isinstance(n, ast.Import) and any(a.name.split(".")[0] in ("aiortc", "aioice") for a in n.names))
        or (isinstance(n, ast.ImportFrom) and (n.module or "").split(".")[0] in ("aiortc", "aioice"))
        for n in ast.walk(tree)
    )
    if not uses_aiortc:
        return []
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            owner = node.value
            if not (isinstance(owner, ast.Name) and owner.id in ("self", "cls")):
                found.append(f"{path.name}:{node.lineno} .{node.attr}")
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("getattr", "setattr", "hasattr"):
            if len(node.args) > 1 and isinstance(node.args[1], ast.Constant) and str(node.args[1].value).startswith("_"):
                found.append(f"{path.name}:{node.lineno} {node.args[1].value}")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ("aiortc", "aioice"):
            found += [f"{path.name}:{node.lineno} import {a.name}" for a in node.names if a.name.startswith("_")]
    return found


def test_only_the_adapter_touches_aiortc_private_names():
    found = {m: uses for m, path in MODULES.items() if m != ADAPTER and (uses := _private_uses(path))}
    assert found == {}
    assert _private_uses(MODULES[ADAPTER]), "the check would see private names if there were any"


def test_the_installed_aiortc_has_what_the_adapter_patches():
    aiortc_adapter.verify()


def test_an_upgrade_that_removes_a_patched_name_is_named(monkeypatch):
    from aiortc import RTCRtpSender

    monkeypatch.delattr(RTCRtpSender, "_send_keyframe")
    with pytest.raises(aiortc_adapter.AiortcMismatch, match=r"RTCRtpSender\._send_keyframe"):
        aiortc_adapter.verify()


def test_no_source_file_is_over_the_size_limit():
    long = {str(p.relative_to(SRC)): n for p in MODULES.values() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_the_command_line_parser_loads_no_heavy_library():
    """`livegen --help`, `livegen process --help` and a mistyped flag answer at once: building
    the parser imports no model or media framework (each command imports its own when it runs)."""
    import subprocess
    import sys

    heavy = ("torch", "cv2", "mediapipe", "aiortc", "diffusers", "transformers", "grpc")
    code = (
        "import sys\nfrom livegen.cli import build_parser\nbuild_parser()\n"
        f"print(','.join(name for name in {heavy!r} if name in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert loaded.stdout.strip() == "", loaded.stdout
