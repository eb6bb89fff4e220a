"""Live control of a stream's effect chain: switch preset, run a custom chain, change parameters.

A change is checked before it touches anything. When it keeps the same effects and each changed
one can take its new parameters in place, the running effects are retuned between two frames
(models and mask history stay warm). Otherwise a new chain is built off the event loop and
swapped in between two frames. On any error the stream keeps its chain untouched.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from livegen.config import EffectSpec, PresetSpec
from livegen.engine.presets import PresetLibrary
from livegen.errors import NotFound
from livegen.hub.stream import Stream

log = logging.getLogger(__name__)


def wanted_spec(
    stream: Stream,
    presets: PresetLibrary,
    preset: str | None,
    effects: list[EffectSpec] | None,
    params: dict[str, dict[str, Any]] | None,
) -> PresetSpec:
    """The chain `stream` should run after the change: `preset`, or `effects`, then `params`
    merged in; 422 for a bad combination, an unknown preset or an effect not in the chain."""
    return presets.requested(preset, effects, params, base=stream.spec)


async def change_chain(stream: Stream, presets: PresetLibrary, spec: PresetSpec, still_live: Callable[[], bool]) -> None:
    """Make `stream` run `spec`: retuned in place when it can be, else rebuilt and swapped.
    `still_live()` says whether the stream still exists after the (slow) build."""
    if retune_in_place(stream, spec):
        return
    chain = await asyncio.get_running_loop().run_in_executor(None, presets.build, spec)
    if not still_live():  # the publisher left meanwhile
        chain.close()
        raise NotFound(f"no stream {stream.name!r}")
    stream.pipeline.set_chain(chain)
    stream.spec = spec
    log.info("[%s] chain → %s (%s)", stream.tag, spec.name, ", ".join(e.name for e in spec.effects))


def retune_in_place(stream: Stream, spec: PresetSpec) -> bool:
    """Change `stream`'s running chain in place when `spec` has the same effects and each
    changed one can take its new parameters live (no rebuild, no lost state); False when the
    chain must be rebuilt. Parameters are validated first: a bad one is 422."""
    chain = stream.pipeline.chain
    if chain is None or [e.name for e in spec.effects] != [e.name for e in chain.effects]:
        return False
    changes = {}
    for index, (effect, wanted) in enumerate(zip(chain.effects, spec.effects, strict=True)):
        params = type(effect).validate(wanted.params)
        if params == effect.params:
            continue
        if not effect.retunable(params):
            return False
        changes[index] = params
    stream.pipeline.retune(chain, changes)
    stream.spec = spec
    log.info("[%s] retuned %s in place", stream.tag, ", ".join(chain.effects[i].name for i in changes) or "nothing")
    return True
