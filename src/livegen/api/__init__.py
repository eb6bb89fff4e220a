"""The HTTP face of the node: aiohttp app factory, WHIP/WHEP and REST routes, web pages."""

from livegen.api.app import create_app

__all__ = ["create_app"]
