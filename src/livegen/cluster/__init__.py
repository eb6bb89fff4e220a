"""Nodes behind one endpoint: membership, stream-name claims and routing through Redis
(`ClusterRegistry`), and their metrics. Off unless `cluster.redis_url` is set."""

from livegen.cluster.registry import (
    ClusterNode,
    ClusterRegistry,
    ClusterStream,
    default_public_url,
)

__all__ = ["ClusterNode", "ClusterRegistry", "ClusterStream", "default_public_url"]
