"""`NodeEngine`: the device worker, the diffusion stage and the preset library, built from the
settings the same way by every entry point — the node (`api.app`), `livegen process` and the
benchmarks — so a chain behaves the same wherever it runs.

Building starts nothing: the worker's thread and the diffusion stage's loading start when the
owner calls `start()` (the node does so with the app, a command at once).
"""

from __future__ import annotations

from dataclasses import dataclass

from livegen.config import Settings
from livegen.diffusion.generator import DiffusionGenerator
from livegen.effects.base import EffectContext
from livegen.engine.presets import PresetLibrary
from livegen.engine.worker import DeviceWorker, select_device
from livegen.media.assets import AssetStore


@dataclass
class NodeEngine:
    worker: DeviceWorker
    generator: DiffusionGenerator
    """Loads its models on a thread of its own once started; until then (and for good without
    a GPU or a model) `generated` backgrounds and `stylize` show their fallbacks."""
    presets: PresetLibrary
    assets: AssetStore

    @classmethod
    def build(cls, settings: Settings, device: str | None = None) -> NodeEngine:
        """From `settings` (`device` overrides `engine.device`); `ConfigError` for bad presets or
        an unusable device."""
        engine = settings.engine
        assets = AssetStore(settings.server.uploads_dir, settings.assets_dir(), settings.server.max_upload_bytes)
        worker = DeviceWorker(
            select_device(device or engine.device), engine.budget_ms, engine.cpu_threads, engine.worker_load,
            engine.shed,
        )
        generator = DiffusionGenerator(settings.diffusion, worker.device)
        presets = PresetLibrary.from_folder(
            settings.presets_dir(), engine.default_preset, EffectContext(assets=assets, generator=generator),
            max_chain=engine.max_chain,
        )
        return cls(worker, generator, presets, assets)

    def start(self) -> None:
        self.worker.start()
        self.generator.start()

    def close(self) -> None:
        self.worker.stop()
        self.generator.close()
