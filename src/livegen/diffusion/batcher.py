"""`DenoisingBatcher`: the models on one device, and one UNet call for every stream's frame.

The batcher belongs to the device worker's thread (the one that owns the device), except the
text encoder, which the prompt bank runs on its own thread — on CUDA on its own CUDA stream, so
encoding a prompt overlaps the frame path instead of queueing in it.

Frames from several streams' denoisers (`denoiser.StreamDenoiser`) are batched: `submit()`
queues a denoiser's frame, `collect()` runs everything queued — one TAESD encode, one UNet call
per latent size (all denoisers' in-flight slots concatenated, each row with its own timestep
and prompt embeddings), one TAESD decode — and hands back this frame's output. A worker that
calls every stream's `submit()` before the first `collect()` (the effects' prepare / apply
split) gets cross-stream batches; one that does not still gets correct single-stream frames.

Structure control (`GenerationParams.controlnet`) rides in the same UNet call. Each frame of a
controlled stream gets its condition picture (`structure`: canny edges, depth), made for all
streams of a kind and size at once, and every row of its stream batch carries the picture of
the frame it came from (the in-flight slots keep theirs), so output i still shows input
i − (steps − 1), now with that input's structure. A UNet call whose rows include a controlled
stream first runs each ControlNet involved once on all its rows; a row's residuals are scaled
by its stream's `controlnet_scale` — 0 for rows of streams without that ControlNet, whose
residuals thus add exactly nothing — and added to the UNet's blocks. So streams with and
without control, and with different scales, still share one UNet call (the price: ControlNet
work on rows that discard it, small next to a second UNet call); a call without any controlled
row runs no ControlNet.

On CUDA the models run in fp16 and channels-last; `torch.compile` and CUDA graphs are opt-in
and fall back to eager when they fail, and `path` says what actually runs. On the CPU the same
code runs in fp32.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from livegen.diffusion.denoiser import (
    LATENT_SCALE,
    StreamDenoiser,
    Ticket,
    seeded_noise,
)
from livegen.diffusion.models import DiffusionModels
from livegen.diffusion.prompts import PromptBank
from livegen.diffusion.schedule import (
    LCM_GUIDANCE_SCALE,
    NoiseSchedule,
    StepCoefficients,
    guidance_embedding,
    stream_timesteps,
)
from livegen.diffusion.structure import (
    canny_on_device,
    canny_on_host,
    edges_to_condition,
)
from livegen.diffusion.unet import (
    ControlInputs,
    CudaGraphUnet,
    StreamRows,
    UnetCall,
    control_inputs,
    controlled_unet,
)
from livegen.effects.generation import GenerationParams
from livegen.flow.ratelog import RateLimitedLog
from livegen.media.convert import tensor_to_rgb

log = logging.getLogger(__name__)


class DenoisingBatcher:
    def __init__(
        self,
        models: DiffusionModels,
        device: torch.device,
        *,
        dtype: torch.dtype | None = None,
        compile: bool = False,
        cuda_graphs: bool = False,
        channels_last: bool = True,
        max_batch: int = 8,
        prompt_cache: int = 64,
        profile: bool = False,
    ):
        self.models = models
        self.device = device
        self.dtype = dtype or (torch.float16 if device.type == "cuda" else torch.float32)
        self.max_batch = max_batch
        self.profile = profile
        """Synchronise around each part so `timings_ms` are true device times (benchmarks only)."""
        self.schedule = NoiseSchedule.from_config(models.scheduler_config)
        self.latent_channels = models.latent_channels
        self.channels_last = channels_last and device.type == "cuda"
        self.controlnets: dict[str, Any] = dict(models.controlnets)
        """The ControlNets by the kind of condition they follow."""
        self.depth = models.depth
        for module in (models.unet, models.vae, models.text_encoder, *self.controlnets.values()):
            weight = next(module.parameters())
            if weight.device != device or weight.dtype != self.dtype:  # load() already placed them
                module.to(device=device, dtype=self.dtype)
            module.eval().requires_grad_(False)
        if self.depth is not None:
            self.depth.to(device, self.dtype)
        if self.channels_last:
            for module in (models.unet, models.vae, *self.controlnets.values()):
                module.to(memory_format=torch.channels_last)
        self._prompt_cuda_stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.prompts = PromptBank(self._encode_prompt, prompt_cache)
        self._pending: list[Ticket] = []
        self.timings_ms: dict[str, float] = {}
        """Time of each part of the last `flush()` (device times only when `profile`)."""
        self.unet_calls = 0
        self.fallbacks: list[str] = []
        """Why an opt-in speed-up is not running (each a sentence), for doctor and metrics."""
        self.out_of_memory = RateLimitedLog(log)
        """Flushes that ran out of device memory (their frames showed the fallback)."""
        self._compile_requested = compile
        self._graphs_requested = cuda_graphs
        dim = getattr(models.unet.config, "time_cond_proj_dim", None)
        self._guidance = None if not dim else guidance_embedding(LCM_GUIDANCE_SCALE, dim).to(device, self.dtype)
        """An LCM-distilled UNet's guidance condition (`timestep_cond`), made once."""
        self._eager: UnetCall = self._eager_unet  # one bound method, so `is` can recognise it
        self._unet: UnetCall = self._eager
        self._mode = "eager"
        if compile:
            self._try_compile()
        if cuda_graphs:
            if device.type != "cuda":
                self.fallbacks.append("CUDA graphs need a CUDA device; running without")
            else:
                self._unet = CudaGraphUnet(self._unet)
                self._mode += "+cudagraph"

    # ---- what runs -----------------------------------------------------------------------
    @property
    def path(self) -> str:
        """What actually runs, e.g. `cuda fp16 channels-last compiled+cudagraph` or `cpu fp32 eager`."""
        dtype = str(self.dtype).removeprefix("torch.").replace("float", "fp")
        layout = " channels-last" if self.channels_last else ""
        return f"{self.device.type} {dtype}{layout} {self._mode}"

    def _eager_unet(
        self, x: torch.Tensor, t: torch.Tensor, emb: torch.Tensor, *controls: torch.Tensor, kinds: tuple[str, ...] = ()
    ) -> torch.Tensor:
        return controlled_unet(self.models.unet, self.controlnets, self._guidance, x, t, emb, *controls, kinds=kinds)

    def _try_compile(self) -> None:
        try:
            self._unet = torch.compile(self._eager_unet, fullgraph=False, dynamic=False)
            self._mode = "compiled"
        except Exception as exc:
            self._fall_back(f"torch.compile failed ({type(exc).__name__}: {exc}); running eager")

    def _fall_back(self, reason: str) -> None:
        log.warning("diffusion: %s", reason)
        self.fallbacks.append(reason)
        self._unet = self._eager
        self._mode = "eager"

    def _call_unet(
        self, x: torch.Tensor, t: torch.Tensor, emb: torch.Tensor, controls: Sequence[ControlInputs] = ()
    ) -> torch.Tensor:
        """One UNet call (with the ControlNets of `controls` on the same rows first)."""
        self.unet_calls += 1
        kinds = tuple(c.kind for c in controls)
        inputs = (x, t, emb, *(tensor for c in controls for tensor in (c.images, c.scales)))
        if self._unet is self._eager:  # an eager failure is the UNet's own: no retry, no fallback
            return self._eager(*inputs, kinds=kinds)
        try:
            return self._unet(*inputs, kinds=kinds)
        except Exception as exc:  # a compile or capture failure shows on first use of a shape
            self._fall_back(f"{self._mode} UNet failed ({type(exc).__name__}: {exc}); running eager")
            return self._eager_unet(*inputs, kinds=kinds)

    def warmup(self, size: tuple[int, int] = (512, 512), batch_sizes: tuple[int, ...] = (1,)) -> float:
        """Run the UNet (alone and with each ControlNet) and TAESD once per batch size at `size`
        (compiles / captures now, not on a viewer's first frame); seconds taken. A failing
        speed-up falls back here."""
        started = time.perf_counter()
        width, height = size
        emb = torch.zeros(1, 77, self.models.embedding_dim, device=self.device, dtype=self.dtype)
        with torch.inference_mode():
            for batch in batch_sizes:
                x = torch.zeros(batch, self.latent_channels, height // LATENT_SCALE, width // LATENT_SCALE,
                                device=self.device, dtype=self.dtype)
                t = torch.full((batch,), 500, device=self.device, dtype=torch.long)
                images = torch.zeros(batch, 3, height, width, device=self.device, dtype=self.dtype)
                for kind in (None, *self.controlnets):
                    controls = [] if kind is None else control_inputs([StreamRows(batch, kind, 1.0, images)],
                                                                      self.device, self.dtype)
                    self._call_unet(x, t, emb.expand(batch, -1, -1), controls)
                if self.depth is not None:
                    self.depth(images)
                self.decode(self.encode(images))
        self._sync()
        return time.perf_counter() - started

    # ---- parts ---------------------------------------------------------------------------
    def _encode_prompt(self, prompt: str) -> torch.Tensor:
        tokenizer, encoder = self.models.tokenizer, self.models.text_encoder
        length = min(tokenizer.model_max_length, encoder.config.max_position_embeddings)
        ids = tokenizer(prompt, padding="max_length", max_length=length, truncation=True, return_tensors="pt").input_ids
        if self._prompt_cuda_stream is None:
            return encoder(ids.to(self.device))[0]
        with torch.cuda.stream(self._prompt_cuda_stream):
            embeddings = encoder(ids.to(self.device, non_blocking=True))[0]
        self._prompt_cuda_stream.synchronize()  # ready for any CUDA stream once this returns
        return embeddings

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) in [0, 1] → latents (B, C, h/8, w/8), scaled as the UNet expects them."""
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        latents = self.models.vae.encode(images.mul(2.0).sub(1.0), return_dict=False)[0]
        return latents * self.models.vae.config.scaling_factor

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents → (B, 3, h, w) in [0, 1]."""
        images = self.models.vae.decode(latents / self.models.vae.config.scaling_factor, return_dict=False)[0]
        return images.add(1.0).div(2.0).clamp(0.0, 1.0)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _timed(self, part: str, started: float) -> float:
        if self.profile:
            self._sync()
        now = time.perf_counter()
        self.timings_ms[part] = self.timings_ms.get(part, 0.0) + (now - started) * 1000.0
        return now

    # ---- denoisers -----------------------------------------------------------------------
    def open_denoiser(self, params: GenerationParams, prompt: str) -> StreamDenoiser:
        """A denoiser for one stream, run by this batcher; its prompt starts encoding now."""
        return StreamDenoiser(self, params, prompt)

    def forget(self, denoiser: StreamDenoiser) -> None:
        self._pending = [t for t in self._pending if t.denoiser is not denoiser]

    def submit(self, denoiser: StreamDenoiser, image: torch.Tensor, picture: np.ndarray | None = None) -> Ticket:
        """Queue `image` ((3, h, w) on the device; `picture`: the same on the host, if at hand)."""
        ticket = Ticket(denoiser, image, picture=picture)
        self._pending.append(ticket)
        return ticket

    def collect(self, ticket: Ticket) -> torch.Tensor | None:
        """`ticket`'s output, running everything queued first if it has not run yet."""
        if not ticket.done:
            self.flush()
        return ticket.output

    def flush(self) -> None:
        """Run every queued frame: TAESD encode, batched UNet, TAESD decode."""
        tickets, self._pending = self._pending, []
        self.timings_ms = {}
        ready: list[tuple[Ticket, torch.Tensor]] = []
        for ticket in tickets:
            embeddings = ticket.denoiser.conditioning.current()
            if embeddings is None:  # the prompt's first embeddings are still being encoded
                ticket.done = True
                ticket.notes.add("diffusion_prompt_pending")
                continue
            ready.append((ticket, embeddings))
        if not ready:
            return
        try:
            self._run(ready)
        except torch.OutOfMemoryError:
            # The device ran out of memory (a burst of streams, another process): these frames
            # show their fallback, their streams start over from a fresh latent, the node goes on.
            self.out_of_memory.failure("diffusion: out of device memory on %d frame(s); they show their fallback",
                                       len(ready))
            for ticket, _ in ready:
                ticket.done, ticket.output = True, None
                ticket.notes.add("diffusion_out_of_memory")
                ticket.denoiser.inflight = ticket.denoiser.inflight_control = None
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    def _run(self, ready: list[tuple[Ticket, torch.Tensor]]) -> None:
        with torch.inference_mode():
            started = time.perf_counter()
            groups: dict[tuple[int, ...], list[tuple[Ticket, torch.Tensor]]] = {}
            for ticket, embeddings in ready:
                groups.setdefault(tuple(ticket.image.shape), []).append((ticket, embeddings))  # type: ignore[union-attr]
            latents: dict[int, torch.Tensor] = {}
            for group in groups.values():
                encoded = self.encode(torch.stack([t.image for t, _ in group]))  # type: ignore[misc]
                for row, (ticket, _) in enumerate(group):
                    latents[id(ticket)] = encoded[row : row + 1]
            started = self._timed("taesd_encode", started)
            if self._condition([ticket for ticket, _ in ready]):
                started = self._timed("control", started)
            finals: list[tuple[Ticket, torch.Tensor]] = []
            for group in groups.values():
                finals += self._denoise_group([(t, e, latents[id(t)]) for t, e in group])
            started = self._timed("unet", started)
            by_shape: dict[tuple[int, ...], list[tuple[Ticket, torch.Tensor]]] = {}
            for ticket, latent in finals:
                by_shape.setdefault(tuple(latent.shape), []).append((ticket, latent))
            for group in by_shape.values():
                images = self.decode(torch.cat([latent for _, latent in group]))
                for row, (ticket, _) in enumerate(group):
                    ticket.output = images[row]
                    ticket.denoiser.last_output = ticket.output
                    ticket.denoiser.frames_denoised += 1
                    ticket.done = True
            self._timed("taesd_decode", started)

    def _condition(self, tickets: list[Ticket]) -> bool:
        """Each controlled stream's condition picture for this frame (`Ticket.control`), made in
        one call per kind and size (see `structure`); False when no stream follows one."""
        groups: dict[tuple[str, tuple[int, ...]], list[Ticket]] = {}
        for ticket in tickets:
            kind = ticket.denoiser.control_kind
            if kind is None:
                continue
            if kind not in self.controlnets:  # configured but failed to load: run without
                ticket.notes.add("controlnet_unavailable")
                continue
            groups.setdefault((kind, tuple(ticket.image.shape)), []).append(ticket)  # type: ignore[union-attr]
        for (kind, _), group in groups.items():
            if kind == "canny" and self.device.type == "cpu":  # OpenCV on the host picture beats torch there
                for ticket in group:
                    picture = ticket.picture if ticket.picture is not None else tensor_to_rgb(ticket.image)  # type: ignore[arg-type]
                    ticket.control = edges_to_condition(canny_on_host(picture), self.device, self.dtype)
                continue
            images = torch.stack([ticket.image for ticket in group])  # type: ignore[misc]
            made = canny_on_device(images) if kind == "canny" else self.depth(images)  # type: ignore[misc]
            for row, ticket in enumerate(group):
                ticket.control = made[row]
        return bool(groups)

    def _denoise_group(self, items: list[tuple[Ticket, torch.Tensor, torch.Tensor]]) -> list[tuple[Ticket, torch.Tensor]]:
        """One UNet call (split at `max_batch` rows) for denoisers whose latents share a size."""
        rows: list[tuple[Ticket, torch.Tensor, torch.Tensor]] = []  # (ticket, embeddings, the stream's rows)
        streams: list[StreamRows] = []  # the same rows as the ControlNets see them
        for ticket, embeddings, latent in items:
            denoiser = ticket.denoiser
            c, noise = denoiser.coefficients, denoiser.noise
            assert c is not None and noise is not None
            if denoiser.last_latent is not None and denoiser.params.feedback > 0:
                latent = torch.lerp(latent, denoiser.last_latent, denoiser.params.feedback)
            first = c.noised(latent, noise[0:1], slice(0, 1))
            control = None if ticket.control is None else ticket.control[None]
            kind, scale = denoiser.control_kind, denoiser.params.controlnet_scale
            if denoiser.inflight is None and denoiser.params.steps > 1:
                priming = control_inputs([StreamRows(1, kind, scale, control)], self.device, self.dtype)
                denoiser.inflight = self._prime(first, embeddings, c, noise, priming)
                if control is not None:  # every primed slot holds the first frame
                    denoiser.inflight_control = control.expand(denoiser.inflight.shape[0], -1, -1, -1)
                denoiser.primes += 1
            batch = first if denoiser.inflight is None else torch.cat([first, denoiser.inflight])
            if control is not None and denoiser.inflight is not None:
                control = torch.cat([control, denoiser.inflight_control])  # type: ignore[list-item]
            rows.append((ticket, embeddings.expand(batch.shape[0], -1, -1), batch))
            streams.append(StreamRows(batch.shape[0], kind, scale, control))
        x = torch.cat([batch for _, _, batch in rows])
        t = torch.cat([ticket.denoiser.coefficients.timesteps for ticket, _, _ in rows])  # type: ignore[union-attr]
        e = torch.cat([embeddings for _, embeddings, _ in rows])
        controls = control_inputs(streams, self.device, self.dtype)
        outputs = []
        for i in range(0, x.shape[0], self.max_batch):
            chunk = slice(i, i + self.max_batch)  # a chunk without a kind's rows skips that ControlNet
            outputs.append(self._call_unet(x[chunk], t[chunk], e[chunk],
                                           [c.rows(chunk) for c in controls if any(c.followed[chunk])]))
        output = outputs[0] if len(outputs) == 1 else torch.cat(outputs)
        finals, offset = [], 0
        for (ticket, _, batch), stream in zip(rows, streams, strict=True):
            denoiser = ticket.denoiser
            c, noise = denoiser.coefficients, denoiser.noise
            assert c is not None and noise is not None
            span = batch.shape[0]
            clean = c.clean(x[offset : offset + span], output[offset : offset + span])
            offset += span
            if span > 1:  # every slot but the last moves one step on, re-noised with the stream's noise
                denoiser.inflight = c.noised(clean[:-1], noise[1:], slice(1, None))
                denoiser.inflight_control = None if stream.conditions is None else stream.conditions[:-1]
            final = clean[-1:]
            if denoiser.last_latent is not None and denoiser.params.smoothing > 0:
                final = torch.lerp(final, denoiser.last_latent, denoiser.params.smoothing)
            denoiser.last_latent = final
            finals.append((ticket, final))
        return finals

    def _prime(
        self, first: torch.Tensor, embeddings: torch.Tensor, c: StepCoefficients, noise: torch.Tensor,
        controls: Sequence[ControlInputs] = (),
    ) -> torch.Tensor:
        """Slots 1 … steps−1 filled with the first frame at those steps (one UNet call each)."""
        states, x = [], first
        for k in range(noise.shape[0] - 1):
            clean = c.clean(x, self._call_unet(x, c.timesteps[k : k + 1], embeddings, controls), slice(k, k + 1))
            x = c.noised(clean, noise[k + 1 : k + 2], slice(k + 1, k + 2))
            states.append(x)
        return torch.cat(states)

    def denoise(
        self, latent: torch.Tensor, embeddings: torch.Tensor, c: StepCoefficients, noise: torch.Tensor,
        controls: Sequence[ControlInputs] = (),
    ) -> torch.Tensor:
        """A clean latent from `latent` through every step one at a time (under `controls`, one
        row): the reference that the denoiser's batch must match, and the way a still scene is made."""
        x = c.noised(latent, noise[0:1], slice(0, 1))
        steps = noise.shape[0]
        for k in range(steps):
            clean = c.clean(x, self._call_unet(x, c.timesteps[k : k + 1], embeddings, controls), slice(k, k + 1))
            if k + 1 < steps:
                x = c.noised(clean, noise[k + 1 : k + 2], slice(k + 1, k + 2))
        return clean

    def generate_still(self, embeddings: torch.Tensor, size: tuple[int, int], steps: int, seed: int) -> torch.Tensor:
        """Text-to-image: (3, h, w) in [0, 1] at `size` from pure noise (strength 1)."""
        width, height = size
        c = self.schedule.coefficients(stream_timesteps(1.0, steps, self.schedule.train_steps), self.device, self.dtype)
        shape = (steps, self.latent_channels, height // LATENT_SCALE, width // LATENT_SCALE)
        noise = seeded_noise(seed, shape).to(self.device, self.dtype)
        with torch.inference_mode():
            clean = self.denoise(torch.zeros_like(noise[0:1]), embeddings, c, noise)
            return self.decode(clean)[0]

    def close(self) -> None:
        self._pending = []
        self.prompts.close()
