"""The diffusion stage on the CPU with tiny random-weight models of the real classes.

The models are built once, saved in diffusers layout and loaded through the real loading code.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from livegen.config import DiffusionSettings
from livegen.diffusion import tiny
from livegen.diffusion.batcher import DenoisingBatcher
from livegen.diffusion.generator import DiffusionGenerator
from livegen.diffusion.models import MissingModel, ModelSpec, load, locate
from livegen.diffusion.schedule import guidance_embedding, stream_timesteps
from livegen.effects.base import EffectContext, Frame
from livegen.effects.generation import GenerationParams
from livegen.effects.stylize import StylizeEffect
from livegen.errors import Unprocessable

CPU = torch.device("cpu")
SIZE = 64  # working size: 8×8 latents


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny.build_folder(tmp_path_factory.mktemp("diffusion") / "tiny", seed=0)


@pytest.fixture(scope="module")
def batcher(model_dir: Path):
    models = load(ModelSpec(str(model_dir), taesd=None), CPU, torch.float32)
    batcher = DenoisingBatcher(models, CPU)
    yield batcher
    batcher.close()


def params(**changes) -> GenerationParams:
    return GenerationParams(**{"size": SIZE, "similarity": 1.0, **changes})


def pictures(count: int, seed: int = 1, size: tuple[int, int] = (SIZE, SIZE)) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8) for _ in range(count)]


def settled(denoiser, timeout: float = 10.0) -> None:
    """Wait until the denoiser's prompt embeddings are in use (encoding runs on another thread)."""
    deadline = time.monotonic() + timeout
    while denoiser.conditioning.wait(0.05) is None or denoiser.conditioning.pending:
        assert time.monotonic() < deadline, "the prompt was never encoded"


# ---- models ---------------------------------------------------------------------------------
def test_tiny_model_loads_through_the_real_loader(model_dir: Path, tmp_path: Path) -> None:
    folders = locate(ModelSpec(str(model_dir), taesd=None))
    assert folders.taesd_inside and all(size > 0 for size in folders.sizes().values())
    # the layout of a hub model: no AutoencoderTiny in vae/, TAESD in a folder of its own
    hub_like = tmp_path / "hub-like"
    hub_like.mkdir()
    for part in ("unet", "text_encoder", "tokenizer", "scheduler"):
        (hub_like / part).symlink_to(model_dir / part)
    shutil.copytree(model_dir / "vae", tmp_path / "taesd")
    models = load(ModelSpec(str(hub_like), taesd=str(tmp_path / "taesd")), CPU, torch.float32)
    assert type(models.unet).__name__ == "UNet2DConditionModel"
    assert type(models.vae).__name__ == "AutoencoderTiny"
    assert type(models.text_encoder).__name__ == "CLIPTextModel"
    assert models.kind == "turbo" and models.folders.taesd == tmp_path / "taesd"


def test_missing_model_names_what_to_put_where(model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(MissingModel, match="does not exist.*unet/, text_encoder/, tokenizer/ and scheduler/"):
        locate(ModelSpec(str(tmp_path / "nowhere")))
    with pytest.raises(MissingModel, match=r"livegen models pull nobody/no-such-model"):
        locate(ModelSpec("nobody/no-such-model", cache_dir=tmp_path / "empty-cache"))
    partial = tmp_path / "partial"
    shutil.copytree(model_dir, partial, ignore=shutil.ignore_patterns("unet"))
    with pytest.raises(MissingModel, match=r"lacks unet/"):
        locate(ModelSpec(str(partial), taesd=None))
    no_taesd = tmp_path / "no-taesd"
    shutil.copytree(model_dir, no_taesd, ignore=shutil.ignore_patterns("vae"))
    with pytest.raises(MissingModel, match="diffusion.taesd"):
        locate(ModelSpec(str(no_taesd), taesd=None))


def test_missing_model_falls_back_cleanly(tmp_path: Path) -> None:
    generator = DiffusionGenerator(DiffusionSettings(model=str(tmp_path / "absent"), allow_cpu=True), CPU)
    generator.load()
    reason = generator.unavailable()
    assert reason is not None and "absent" in reason and "unet/" in reason
    scene = generator.scene("a beach", {"size": SIZE})
    frame = Frame(0, rgb=pictures(1)[0])
    assert scene.background(frame) is None and "diffusion_unavailable" in scene.notes
    effect = StylizeEffect.create({"prompt": "oil painting"}, EffectContext(generator=generator))
    frame = Frame(0, rgb=pictures(1)[0])
    effect.apply(frame)
    assert np.array_equal(frame.rgb, frame.source) and "diffusion_unavailable" in frame.notes
    effect.close()
    scene.close()
    generator.close()


def test_no_gpu_without_allow_cpu_is_a_reason_not_a_crash(model_dir: Path) -> None:
    generator = DiffusionGenerator(DiffusionSettings(model=str(model_dir), taesd=None), CPU)
    generator.load()
    assert "allow_cpu" in (generator.unavailable() or "")
    assert generator.batcher is None


# ---- parameters and schedule ----------------------------------------------------------------
def test_strength_is_a_number_mapped_to_timesteps() -> None:
    assert stream_timesteps(1.0, 1) == [999]
    assert stream_timesteps(0.5, 2) == [499, 249]
    assert stream_timesteps(0.75, 3) == [749, 499, 249]
    with pytest.raises(ValueError):
        stream_timesteps(0.001, 4)


def test_bad_parameters_are_named(model_dir: Path) -> None:
    generator = DiffusionGenerator(DiffusionSettings(model=str(model_dir), taesd=None, allow_cpu=True), CPU)
    with pytest.raises(Unprocessable, match=r"generated\.strength"):
        generator.scene("a beach", {"strength": 1.5})
    with pytest.raises(Unprocessable, match=r"generated\.steps"):
        generator.scene("a beach", {"steps": 9})
    with pytest.raises(Unprocessable, match="prompt2"):
        generator.scene("a beach", {"prompt_weight": 0.5})
    with pytest.raises(Unprocessable, match=r"stylize\.prompt"):
        StylizeEffect.create({})
    generator.close()


# ---- frames ---------------------------------------------------------------------------------
def test_outputs_have_the_frame_shape_and_range_without_nans(batcher: DenoisingBatcher) -> None:
    stream = batcher.open_denoiser(params(steps=2), "a beach at sunset")
    settled(stream)
    for picture in pictures(3, size=(96, 54)):  # a 16:9 frame: the long side becomes SIZE
        out = stream.process(picture)
        assert out is not None and out.shape == (3, 40, 64) and out.dtype == torch.float32
        assert torch.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0
    stream.close()


def test_fixed_seed_is_deterministic(batcher: DenoisingBatcher) -> None:
    frames = pictures(3)

    def run(seed: int) -> list[torch.Tensor]:
        stream = batcher.open_denoiser(params(seed=seed), "a forest")
        settled(stream)
        outs = [stream.process(f).clone() for f in frames]
        stream.close()
        return outs

    first, again, other = run(7), run(7), run(8)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.allclose(first[-1], other[-1])


@pytest.mark.parametrize("steps", [1, 2, 3])
def test_stream_batch_keeps_order_with_the_stated_delay(batcher: DenoisingBatcher, steps: int) -> None:
    stream = batcher.open_denoiser(params(steps=steps, strength=0.9), "a city street")
    settled(stream)
    frames = pictures(6, seed=steps)
    calls_before = batcher.unet_calls
    outputs = [stream.process(f).clone() for f in frames]
    assert stream.delay_frames == steps - 1
    # one UNet call per frame, plus steps − 1 to prime the batch on the first frame
    assert batcher.unet_calls - calls_before == len(frames) + steps - 1
    embeddings = stream.conditioning.current()
    for index, out in enumerate(outputs):
        source = frames[max(0, index - stream.delay_frames)]
        with torch.inference_mode():
            latent = batcher.encode(stream.prepare_input(source)[None])
            expected = batcher.decode(batcher.denoise(latent, embeddings, stream.coefficients, stream.noise))[0]
        assert torch.allclose(out, expected, atol=1e-4), f"output {index} is not input {index - steps + 1}"
        others = [f for i, f in enumerate(frames) if i != max(0, index - stream.delay_frames)]
        assert all(not np.array_equal(f, source) for f in others)
    stream.close()


def test_streams_with_the_same_model_share_one_unet_call(batcher: DenoisingBatcher) -> None:
    a = batcher.open_denoiser(params(steps=2, seed=1), "a desert")
    b = batcher.open_denoiser(params(steps=2, seed=2), "a glacier")
    alone = batcher.open_denoiser(params(steps=2, seed=2), "a glacier")
    for stream in (a, b, alone):
        settled(stream)
    frames = pictures(4, seed=5)
    for picture in frames[:1]:  # prime all three one by one
        for stream in (a, b, alone):
            stream.process(picture)
    for picture in frames[1:]:
        before = batcher.unet_calls
        tickets = [a.submit(picture), b.submit(picture)]
        outs = [batcher.collect(t) for t in tickets]
        assert batcher.unet_calls - before == 1, "two streams' frames should share one UNet call"
        assert torch.allclose(outs[1], alone.process(picture), atol=1e-4)
    for stream in (a, b, alone):
        stream.close()


def test_similarity_filter_skips_a_repeated_frame(batcher: DenoisingBatcher) -> None:
    stream = batcher.open_denoiser(params(similarity=0.98, max_skip=3), "a lake")
    settled(stream)
    picture, different = pictures(2, seed=9)
    first = stream.process(picture)
    calls = batcher.unet_calls
    noisy = np.clip(picture.astype(np.int16) + np.random.default_rng(0).integers(-2, 3, picture.shape), 0, 255)
    ticket = stream.submit(noisy.astype(np.uint8))
    assert ticket.skipped and "diffusion_similar" in ticket.notes
    assert batcher.collect(ticket) is first and batcher.unet_calls == calls
    assert stream.submit(different).skipped is False
    batcher.flush()
    # at most max_skip in a row: the fourth repeat is processed
    skipped = [stream.submit(different).skipped for _ in range(4)]
    batcher.flush()
    assert skipped == [True, True, True, False]
    stream.close()


def test_over_budget_reuses_the_last_output(batcher: DenoisingBatcher) -> None:
    stream = batcher.open_denoiser(params(), "a lake")
    settled(stream)
    a, b = pictures(2, seed=11)
    first = stream.process(a)
    calls = batcher.unet_calls
    assert stream.process(b, reuse=True) is first and batcher.unet_calls == calls
    stream.close()


def test_prompt_change_lands_without_blocking_the_frame_path(batcher: DenoisingBatcher) -> None:
    gate = threading.Event()
    real_encode = batcher.prompts._encode

    def slow_encode(prompt: str) -> torch.Tensor:
        if prompt == "slow new prompt":
            assert gate.wait(20)
        return real_encode(prompt)

    batcher.prompts._encode = slow_encode
    try:
        stream = batcher.open_denoiser(params(steps=2), "an old prompt")
        control = batcher.open_denoiser(params(steps=2), "an old prompt")
        settled(stream)
        settled(control)
        frames = pictures(8, seed=3)
        stream.update(prompt="slow new prompt")
        for picture in frames[:3]:  # encoding is held back: frames keep flowing on the old prompt
            started = time.perf_counter()
            out = stream.process(picture)
            assert time.perf_counter() - started < 5 and out is not None
            assert torch.equal(out, control.process(picture))
            assert stream.conditioning.current_request.prompt == "an old prompt"
        gate.set()
        deadline = time.monotonic() + 20
        while not batcher.prompts.cached("slow new prompt"):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        # the first frame after the encoding finished runs on the new prompt
        out = stream.process(frames[3])
        assert stream.conditioning.current_request.prompt == "slow new prompt"
        assert not torch.allclose(out, control.process(frames[3]))
        stream.close()
        control.close()
    finally:
        gate.set()
        batcher.prompts._encode = real_encode


def test_two_prompts_blend_by_weight(batcher: DenoisingBatcher) -> None:
    a = batcher.open_denoiser(params(), "red")
    b = batcher.open_denoiser(params(), "blue")
    mix = batcher.open_denoiser(params(prompt2="blue", prompt_weight=0.25), "red")
    for stream in (a, b, mix):
        settled(stream)
    ea, eb, em = (s.conditioning.current() for s in (a, b, mix))
    assert torch.allclose(em, 0.75 * ea + 0.25 * eb, atol=1e-6)
    for stream in (a, b, mix):
        stream.close()


def test_an_lcm_model_runs_the_same_stream_code() -> None:
    lcm = DenoisingBatcher(tiny.build_models("tiny-lcm", seed=0), CPU)
    assert lcm.models.kind == "lcm" and lcm.schedule.consistency
    stream = lcm.open_denoiser(params(steps=4, strength=1.0), "a portrait")
    settled(stream)
    calls = []
    forward = lcm.models.unet.forward

    def spy(*args, **kwargs):
        calls.append(kwargs.get("timestep_cond"))
        return forward(*args, **kwargs)

    lcm.models.unet.forward = spy
    outs = [stream.process(picture) for picture in pictures(2)]
    assert all(torch.isfinite(out).all() and out.shape == (3, SIZE, SIZE) for out in outs)
    # an LCM-distilled UNet gets its guidance embedding on every call, one row per batch row
    assert calls and all(c is not None and c.shape[1] == 32 for c in calls)
    x = torch.zeros(2, 4, 8, 8)
    emb = torch.zeros(2, 77, 32)
    with torch.inference_mode():
        guided = lcm._eager_unet(x, torch.full((2,), 500), emb)
        bare = forward(x, torch.full((2,), 500), encoder_hidden_states=emb, return_dict=False)[0]
    assert not torch.allclose(guided, bare)  # the condition reaches the network
    # the embedding is the one the LCM pipeline of diffusers gives the same UNet
    from diffusers import LatentConsistencyModelPipeline

    for dim in (32, 33, 256):
        reference = LatentConsistencyModelPipeline.get_guidance_scale_embedding(None, torch.tensor([7.5]), dim)
        assert torch.allclose(guidance_embedding(8.5, dim), reference, atol=1e-6)
    stream.close()
    lcm.close()


# ---- generator and effect -------------------------------------------------------------------
@pytest.fixture(scope="module")
def generator(model_dir: Path):
    generator = DiffusionGenerator(DiffusionSettings(model=str(model_dir), taesd=None, allow_cpu=True), CPU)
    generator.load()
    assert generator.unavailable() is None, generator.unavailable()
    yield generator
    generator.close()


def test_background_mode_returns_a_picture_of_the_frame_size(generator: DiffusionGenerator) -> None:
    scene = generator.scene("a beach", {"size": SIZE, "steps": 2, "similarity": 1.0})
    for index, picture in enumerate(pictures(3, size=(160, 90))):
        frame = Frame(index, rgb=picture)
        scene.prepare(frame)
        background = scene.background(frame)
        assert isinstance(background, np.ndarray) and background.shape == (90, 160, 3)
        assert background.dtype == np.uint8
    assert generator.path == "cpu fp32 eager"
    scene.close()


def test_scene_mode_makes_one_still_and_reuses_it(generator: DiffusionGenerator) -> None:
    scene = generator.scene("a castle", {"size": SIZE, "steps": 2, "mode": "scene"})
    settled(scene._denoiser)
    calls = generator.batcher.unet_calls
    first = scene.background(Frame(0, rgb=pictures(1)[0]))
    second = scene.background(Frame(1, rgb=pictures(1, seed=2)[0]))
    assert generator.batcher.unet_calls - calls == 2  # the two steps of one still
    assert np.array_equal(first, second)
    # another seed (the same prompt) is another still, made once
    scene.update(params={"size": SIZE, "steps": 2, "mode": "scene", "seed": 7})
    third = scene.background(Frame(2, rgb=pictures(1)[0]))
    fourth = scene.background(Frame(3, rgb=pictures(1)[0]))
    assert generator.batcher.unet_calls - calls == 4
    assert not np.array_equal(first, third) and np.array_equal(third, fourth)
    scene.update(params={"size": SIZE, "steps": 1, "mode": "scene", "seed": 7})  # and another step count
    scene.background(Frame(4, rgb=pictures(1)[0]))
    assert generator.batcher.unet_calls - calls == 5
    scene.close()


def test_stylize_keeps_the_person_pixels_under_the_mask(generator: DiffusionGenerator) -> None:
    effect = StylizeEffect.create(
        {"prompt": "oil painting", "size": SIZE, "keep_person": True, "similarity": 1.0},
        EffectContext(generator=generator),
    )
    settled(effect._scene._ensure_denoiser())
    picture = pictures(1, size=(96, 64))[0]
    mask = np.zeros((64, 96), np.float32)
    mask[:, :40] = 1.0  # the person: the left part of the frame
    frame = Frame(0, rgb=picture)
    frame.mask_rgb, frame.mask = mask, torch.from_numpy(mask)[None]
    effect.prepare(frame)
    effect.apply(frame)
    assert np.array_equal(frame.rgb[:, :40], picture[:, :40])
    assert not np.array_equal(frame.rgb[:, 40:], picture[:, 40:])
    effect.close()


def test_generated_background_keeps_the_person_and_takes_new_prompts(generator: DiffusionGenerator) -> None:
    """The effects issue's `generated` background on the real (tiny) diffusion stage: the person
    stays the camera's pixels, the room is generated, and a new prompt reaches the running
    scene in place (no rebuild, no fallback)."""
    from livegen.effects.background import BackgroundEffect

    raw = {"mode": "generated", "prompt": "a beach", "generation": {"size": SIZE, "steps": 2, "similarity": 1.0}}
    effect = BackgroundEffect.create(raw, EffectContext(generator=generator))
    settled(effect._scene._ensure_denoiser())
    picture = pictures(1, size=(96, 64))[0]
    mask = np.zeros((64, 96), np.float32)
    mask[:, 56:] = 1.0  # the person: the right part of the frame
    for index in range(3):
        frame = Frame(index, rgb=picture)
        frame.mask_rgb, frame.mask = mask, torch.from_numpy(mask)[None]
        effect.prepare(frame)
        effect.apply(frame)
        assert "background_fallback" not in frame.notes
    assert np.array_equal(frame.rgb[:, 56:], picture[:, 56:])
    assert not np.array_equal(frame.rgb[:, :56], picture[:, :56])
    changed = effect.Params.model_validate({**raw, "prompt": "a forest"})
    assert effect.retunable(changed)
    stream = effect._scene._denoiser
    effect.retune(changed)
    for index in range(3, 40):  # frames keep flowing while the new prompt is encoded
        frame = Frame(index, rgb=picture)
        frame.mask_rgb, frame.mask = mask, torch.from_numpy(mask)[None]
        effect.prepare(frame)
        effect.apply(frame)
        if stream.conditioning.current_request.prompt == "a forest":
            break
        time.sleep(0.02)
    assert effect._scene._denoiser is stream and stream.conditioning.current_request.prompt == "a forest"
    effect.close()


def test_stylize_takes_a_new_prompt_in_place(generator: DiffusionGenerator) -> None:
    effect = StylizeEffect.create({"prompt": "oil painting", "size": SIZE, "similarity": 1.0},
                                  EffectContext(generator=generator))
    stream = effect._scene._ensure_denoiser()
    settled(stream)
    changed = effect.Params.model_validate({"prompt": "charcoal sketch", "size": SIZE, "similarity": 1.0})
    assert effect.retunable(changed)
    effect.retune(changed)
    picture = pictures(1, size=(80, 64))[0]
    for index in range(40):  # frames keep flowing while the new prompt is encoded
        frame = Frame(index, rgb=picture)
        effect.prepare(frame)
        effect.apply(frame)
        if stream.conditioning.current_request.prompt == "charcoal sketch":
            break
        time.sleep(0.02)
    assert effect._scene._denoiser is stream and stream.conditioning.current_request.prompt == "charcoal sketch"
    effect.close()


def test_stylize_changes_the_whole_frame(generator: DiffusionGenerator) -> None:
    effect = StylizeEffect.create({"prompt": "watercolour", "size": SIZE}, EffectContext(generator=generator))
    picture = pictures(1, size=(80, 64))[0]
    frame = Frame(0, rgb=picture)
    effect.prepare(frame)
    effect.apply(frame)
    assert frame.rgb.shape == picture.shape and not np.array_equal(frame.rgb, picture)
    assert "stylize" == effect.name
    effect.close()


def test_close_stops_the_prompt_thread(model_dir: Path) -> None:
    before = set(threading.enumerate())
    generator = DiffusionGenerator(DiffusionSettings(model=str(model_dir), taesd=None, allow_cpu=True), CPU)
    generator.start()
    deadline = time.monotonic() + 30
    while generator.unavailable() is not None:
        assert time.monotonic() < deadline, generator.unavailable()
        time.sleep(0.02)
    generator.scene("a beach", {"size": SIZE}).close()
    generator.close()
    assert generator.unavailable() == "the diffusion stage is closed"
    assert [t.name for t in set(threading.enumerate()) - before] == []


# ---- bench and tools ------------------------------------------------------------------------
def test_tiny_bench_times_every_part(tmp_path: Path) -> None:
    from livegen.bench.diffusion import DiffusionBenchOptions, run_diffusion_bench

    opts = DiffusionBenchOptions(tiny=True, architecture="tiny", sizes=((64, 64),), steps=(2,), streams=(2,),
                                 frames=3, warmup=1, device="cpu", output=tmp_path)
    result = run_diffusion_bench(opts, log=lambda *_: None)
    (case,) = result["cases"]
    assert case["streams"] == 2 and case["steps"] == 2 and case["path"] == "cpu fp32 eager"
    assert all(case["parts_ms"][part]["p50"] > 0 for part in ("upload", "taesd_encode", "unet", "taesd_decode"))
    assert set(result["modes"]["cudagraph"]) == {"skipped"}
    assert (tmp_path / result["written_to"]).is_file()
    assert "## diffusion" in (tmp_path / "README.md").read_text(encoding="utf-8")


def test_doctor_reports_the_model_and_its_sizes(model_dir: Path, tmp_path: Path) -> None:
    from livegen.diffusion.tools import doctor_lines

    found = "\n".join(doctor_lines(DiffusionSettings(model=str(model_dir), taesd=None)))
    assert f"found at {model_dir}" in found and "unet" in found and "KiB" in found
    missing = "\n".join(doctor_lines(DiffusionSettings(model=str(tmp_path / "absent"))))
    assert "MISSING" in missing and "absent" in missing


def test_pull_fetches_configs_and_half_precision_weights_only() -> None:
    from livegen.diffusion.tools import _weight_patterns

    files = ["model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
             "unet/diffusion_pytorch_model.fp16.safetensors", "text_encoder/model.safetensors",
             "vae/config.json", "vae/diffusion_pytorch_model.safetensors", "sd_turbo.safetensors"]
    assert _weight_patterns(files) == ["unet/diffusion_pytorch_model.fp16.safetensors", "text_encoder/model.safetensors"]
    # TAESD is one model with its config and weights at the root of its repository
    taesd = ["config.json", "diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin",
             "taesd_decoder.pth", "taesd_encoder.pth", "README.md"]
    assert _weight_patterns(taesd) == ["diffusion_pytorch_model.safetensors"]


def test_doctor_probe_says_which_unet_path_runs(model_dir: Path) -> None:
    """`livegen doctor --probe` builds the stage as the node would and runs frames through it."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "LIVEGEN_ENGINE__DEVICE": "cpu", "LIVEGEN_DIFFUSION__MODEL": str(model_dir),
           "LIVEGEN_DIFFUSION__TAESD": "", "LIVEGEN_DIFFUSION__ALLOW_CPU": "true",
           "LIVEGEN_DIFFUSION__CUDA_GRAPHS": "true"}
    out = subprocess.run([sys.executable, "-m", "livegen", "doctor", "--probe"], capture_output=True, text=True,
                         timeout=180, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    probe = [line for line in out.stdout.splitlines() if line.startswith("probe")]
    assert "UNet path: cpu fp32 eager" in probe[0], probe
    assert "CUDA graphs need a CUDA device" in probe[1]  # asked for, and said why it does not run
    assert "5 frames at 64x64" in probe[2]
