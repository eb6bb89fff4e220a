"""Typed settings, loaded in fixed layers: defaults → YAML file → `LIVEGEN_*` env → validate.

Environment variables name a nested key with a double underscore:
`LIVEGEN_SERVER__PORT=9000` sets `server.port`. Their values are read as YAML scalars, so
numbers, booleans and `[a, b]` lists work. Unknown keys and bad values stop start-up with a
`ConfigError` that names the key and where it came from.

The sections themselves are in `config.sections`; every name is imported from here.
Presets (`configs/presets/*.yaml`) are loaded here as plain specs; the engine checks each effect
and its parameters against the effect registry when it builds the chains.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError

from livegen.config.sections import (  # noqa: F401 - re-exported: the settings' one import path
    AuthSettings,
    ClusterSettings,
    DiffusionSettings,
    EngineSettings,
    GrpcSettings,
    IceServer,
    JobSettings,
    OutputSettings,
    RecordingSettings,
    RelaySettings,
    RtcSettings,
    ServerSettings,
    UploadSettings,
    _Section,
)
from livegen.errors import ConfigError
from livegen.resources import bundled_dir

ENV_PREFIX = "LIVEGEN_"


class Settings(_Section):
    server: ServerSettings = Field(default_factory=ServerSettings)
    rtc: RtcSettings = Field(default_factory=RtcSettings)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    output: OutputSettings = Field(default_factory=OutputSettings)
    diffusion: DiffusionSettings = Field(default_factory=DiffusionSettings)
    relay: RelaySettings = Field(default_factory=RelaySettings)
    outputs: dict[str, list[str]] = Field(default_factory=dict)
    """Outputs started when a stream is published: stream name (or "*") → output URLs."""
    recording: RecordingSettings = Field(default_factory=RecordingSettings)
    cluster: ClusterSettings = Field(default_factory=ClusterSettings)
    jobs: JobSettings = Field(default_factory=JobSettings)
    grpc: GrpcSettings = Field(default_factory=GrpcSettings)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    def web_dir(self) -> Path:
        return self.server.web_dir or bundled_dir("web")

    def presets_dir(self) -> Path:
        return self.engine.presets_dir or bundled_dir("configs") / "presets"

    def assets_dir(self) -> Path:
        return self.engine.assets_dir or bundled_dir("configs") / "assets"


class EffectSpec(_Section):
    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class PresetSpec(_Section):
    name: str
    description: str = ""
    effects: list[EffectSpec] = Field(default_factory=list)


def default_config_path() -> Path:
    return bundled_dir("configs") / "default.yaml"


def merge_sections(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `top` laid over it, section by section (nested mappings merge, the rest replaces)."""
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = merge_sections(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, not {type(data).__name__}")
    return data


def _env_layer(env: Mapping[str, str]) -> tuple[dict[str, Any], dict[tuple[str, ...], str]]:
    """Nested values from `LIVEGEN_A__B=v`, and for error messages which variable set what."""
    layer: dict[str, Any] = {}
    origin: dict[tuple[str, ...], str] = {}
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        path = tuple(part.lower() for part in name[len(ENV_PREFIX) :].split("__"))
        if len(path) == 1 and path[0] not in ("log_level", "outputs"):
            continue  # not a settings key (e.g. LIVEGEN_CHROMIUM used by tests)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        node = layer
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{name}: conflicts with another LIVEGEN_ variable")
        node[path[-1]] = value
        origin[path] = name
    return layer, origin


def load_settings(
    path: Path | str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build validated settings. `path` defaults to the bundled configs/default.yaml."""
    source = Path(path) if path is not None else default_config_path()
    data: dict[str, Any] = {}
    if path is not None or source.is_file():
        data = _read_yaml(source)
    env_data, env_origin = _env_layer(os.environ if env is None else env)
    data = merge_sections(data, env_data)
    data = merge_sections(data, overrides or {})
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source, env_origin)) from None


def _describe(exc: ValidationError, source: Path, env_origin: dict[tuple[str, ...], str]) -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(str(p) for p in err["loc"])
        key = ".".join(loc) or "(top level)"
        where = env_origin.get(loc) or str(source)
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        lines.append(f"{where}: {key}: {msg}")
    return "invalid settings:\n  " + "\n  ".join(lines)


def load_presets(directory: Path) -> dict[str, PresetSpec]:
    """Every `*.yaml` in `directory` as a preset named after the file."""
    if not directory.is_dir():
        raise ConfigError(f"presets folder {directory} does not exist")
    presets: dict[str, PresetSpec] = {}
    for file in sorted(directory.glob("*.yaml")):
        data = _read_yaml(file)
        try:
            presets[file.stem] = PresetSpec.model_validate({"name": file.stem, **data})
        except ValidationError as exc:
            raise ConfigError(_describe(exc, file, {})) from None
    if not presets:
        raise ConfigError(f"no preset files (*.yaml) in {directory}")
    return presets
