"""Typed keys under which the app factory stores the node's parts on the aiohttp app."""

from __future__ import annotations

from aiohttp import web

from livegen.cluster.registry import ClusterRegistry
from livegen.config import Settings
from livegen.diffusion.generator import DiffusionGenerator
from livegen.engine.worker import DeviceWorker
from livegen.hub.registry import StreamHub
from livegen.media.assets import AssetStore

SETTINGS = web.AppKey("settings", Settings)
HUB = web.AppKey("hub", StreamHub)
WORKER = web.AppKey("worker", DeviceWorker)
ASSETS = web.AppKey("assets", AssetStore)
GENERATOR = web.AppKey("generator", DiffusionGenerator)
CLUSTER = web.AppKey("cluster", ClusterRegistry)
"""Present only when `cluster.redis_url` is set."""
