"""Structure control: ControlNets in the diffusion stage, on the CPU with tiny random-weight
models of the real classes (`ControlNetModel`, a transformers DPT), saved and loaded through the
real loader."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from livegen.config import DiffusionSettings
from livegen.diffusion import tiny
from livegen.diffusion.batcher import DenoisingBatcher
from livegen.diffusion.generator import DiffusionGenerator
from livegen.diffusion.models import MissingModel, ModelSpec, load, load_controlnet
from livegen.diffusion.structure import (
    canny_on_device,
    canny_on_host,
    edges_to_condition,
)
from livegen.diffusion.unet import CudaGraphUnet, StreamRows, control_inputs
from livegen.effects.base import EffectContext, Frame
from livegen.effects.stylize import StylizeEffect
from livegen.errors import Unprocessable
from tests.test_diffusion import SIZE, params, pictures, settled
from tests.test_diffusion_device_logic import static_buffer_capture

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny.build_folder(tmp_path_factory.mktemp("controlnet") / "tiny", seed=0, controlnet=True, depth=True)


def control_spec(model_dir: Path) -> dict[str, str]:
    return {name: str(path) for name, path in tiny.control_folders(model_dir).items()}


@pytest.fixture(scope="module")
def batcher(model_dir: Path):
    models = load(ModelSpec(str(model_dir), taesd=None, **control_spec(model_dir)), CPU, torch.float32)
    batcher = DenoisingBatcher(models, CPU)
    yield batcher
    batcher.close()


def scene_picture(width: int = 96, height: int = 64) -> np.ndarray:
    """A picture with clear structure: flat shapes on a flat ground, slightly noisy."""
    picture = np.empty((height, width, 3), np.uint8)
    picture[:] = (40, 90, 160)
    cv2.rectangle(picture, (width // 10, height // 8), (width // 2, height * 3 // 4), (230, 200, 30), -1)
    cv2.circle(picture, (width * 3 // 4, height // 2), height // 4, (20, 220, 120), -1)
    cv2.line(picture, (0, height - 6), (width - 1, height // 2 + 8), (250, 250, 250), 2)
    noise = np.random.default_rng(0).integers(-4, 5, picture.shape)
    return np.clip(picture.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def run(batcher: DenoisingBatcher, frames: list[np.ndarray], **changes) -> list[torch.Tensor]:
    stream = batcher.open_denoiser(params(**changes), "a cathedral")
    settled(stream)
    outputs = [stream.process(f).clone() for f in frames]
    stream.close()
    return outputs


# ---- loading --------------------------------------------------------------------------------
def test_control_models_load_through_the_real_loader(batcher: DenoisingBatcher) -> None:
    assert set(batcher.controlnets) == {"canny", "depth"}
    assert all(type(c).__name__ == "ControlNetModel" for c in batcher.controlnets.values())
    assert type(batcher.depth.model).__name__ == "DPTForDepthEstimation"
    assert batcher.models.control_missing == {}


def test_a_controlnet_that_is_missing_or_does_not_fit_is_named(model_dir: Path, tmp_path: Path) -> None:
    unet = load(ModelSpec(str(model_dir), taesd=None), CPU, torch.float32).unet
    with pytest.raises(MissingModel, match=r"livegen models pull nobody/no-controlnet"):
        load_controlnet("nobody/no-controlnet", unet, CPU, torch.float32, cache_dir=tmp_path / "empty")
    with pytest.raises(MissingModel, match=r"diffusion\.controlnet.*is not a ControlNet"):
        load_controlnet(str(model_dir / "unet"), unet, CPU, torch.float32)
    # a ControlNet of another family: its residuals would not fit the UNet's blocks
    other = tiny.build_models("tiny", seed=0)
    from diffusers import UNet2DConditionModel

    wide = UNet2DConditionModel(**{**tiny.ARCHITECTURES["tiny"]["unet"], "cross_attention_dim": 48})
    tiny.build_controlnet(wide).save_pretrained(tmp_path / "wide")
    with pytest.raises(MissingModel, match=r"does not fit.*cross_attention_dim 48 vs 32"):
        load_controlnet(str(tmp_path / "wide"), other.unet, CPU, torch.float32)
    # the model itself still loads; the control part is a reason, not a failure
    models = load(ModelSpec(str(model_dir), taesd=None, controlnet=str(tmp_path / "wide")), CPU, torch.float32)
    assert models.controlnets == {} and "does not fit" in models.control_missing["canny"]


# ---- condition pictures ---------------------------------------------------------------------
def test_host_and_device_canny_agree_on_a_synthetic_picture() -> None:
    picture = scene_picture(128, 96)
    host = canny_on_host(picture) > 0
    for dtype in (torch.float32, torch.float16):  # a GPU frame is fp16
        image = torch.from_numpy(picture).permute(2, 0, 1)[None].to(dtype) / 255.0
        device = canny_on_device(image)
        assert device.shape == (1, 3, 96, 128) and device.dtype == dtype
        edges = device[0, 0].float().numpy() > 0.5
        assert host.sum() > 300  # the picture has structure to find
        near_host = cv2.dilate(host.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        near_device = cv2.dilate(edges.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        assert (edges & near_host).sum() >= 0.95 * edges.sum()  # device edges lie on host edges
        assert (host & near_device).sum() >= 0.95 * host.sum()  # and miss none of them
        assert (host & edges).sum() >= 0.9 * (host | edges).sum()
    blank = torch.full((1, 3, 32, 32), 0.5)
    assert canny_on_device(blank).sum() == 0


def test_canny_condition_is_made_at_the_working_size(batcher: DenoisingBatcher) -> None:
    stream = batcher.open_denoiser(params(controlnet="canny"), "a cathedral")
    settled(stream)
    frame = scene_picture(96, 54)  # 16:9: the working size is 64 × 40
    ticket = stream.submit(frame)
    batcher.collect(ticket)
    assert ticket.control is not None and ticket.control.shape == (3, 40, 64)
    expected = canny_on_host(cv2.resize(frame, (64, 40), interpolation=cv2.INTER_AREA))
    assert expected.any() and torch.equal(ticket.control[0], torch.from_numpy(expected).float() / 255.0)
    assert "control" in batcher.timings_ms
    stream.close()


def test_depth_condition_is_a_normalised_picture_at_the_working_size(batcher: DenoisingBatcher) -> None:
    stream = batcher.open_denoiser(params(controlnet="depth"), "a cathedral")
    settled(stream)
    depths = []
    for picture in (scene_picture(96, 54), pictures(1, size=(96, 54))[0]):
        ticket = stream.submit(picture)
        batcher.collect(ticket)
        depth = ticket.control
        assert depth is not None and depth.shape == (3, 40, 64)
        assert depth.min() == 0.0 and depth.max() == 1.0
        with torch.inference_mode():
            assert torch.equal(depth, batcher.depth(ticket.image[None])[0])  # the estimator on this frame
        depths.append(depth)
    assert not torch.allclose(*depths)
    stream.close()


# ---- frames ---------------------------------------------------------------------------------
def test_control_steers_the_output_by_its_scale(batcher: DenoisingBatcher) -> None:
    frames = [scene_picture()] * 2 + pictures(1, size=(96, 64))
    plain = run(batcher, frames)
    canny = run(batcher, frames, controlnet="canny")
    stronger = run(batcher, frames, controlnet="canny", controlnet_scale=1.6)
    depth = run(batcher, frames, controlnet="depth")
    off = run(batcher, frames, controlnet="canny", controlnet_scale=0.0)
    for index in range(len(frames)):
        # a tiny random decoder's pictures are dim: 1e-3 is far above float noise (1e-7) and ten
        # times what batching may change
        assert not torch.allclose(canny[index], plain[index], atol=1e-3)
        assert not torch.allclose(stronger[index], canny[index], atol=1e-3)
        assert not torch.allclose(depth[index], canny[index], atol=1e-3)
        # scale 0 adds exactly nothing: the same picture as no control at all
        assert torch.allclose(off[index], plain[index], atol=1e-6)


def test_every_step_follows_the_structure_of_its_own_frame(batcher: DenoisingBatcher) -> None:
    """steps 3: output i is input i − 2 denoised step by step under input i − 2's edges (the
    in-flight slots keep their frame's condition picture)."""
    stream = batcher.open_denoiser(params(steps=3, strength=0.9, controlnet="canny", controlnet_scale=1.2), "a cathedral")
    settled(stream)
    frames = [scene_picture(), *pictures(4, seed=21, size=(96, 64))]
    calls = batcher.unet_calls
    outputs = [stream.process(f).clone() for f in frames]
    assert batcher.unet_calls - calls == len(frames) + 2  # one call a frame, two to prime
    embeddings = stream.conditioning.current()
    for index, out in enumerate(outputs):
        source = stream.shrink(frames[max(0, index - stream.delay_frames)])
        condition = edges_to_condition(canny_on_host(source), CPU, torch.float32)
        control = control_inputs([StreamRows(1, "canny", 1.2, condition[None])], CPU, torch.float32)
        with torch.inference_mode():
            latent = batcher.encode(torch.from_numpy(source).permute(2, 0, 1)[None].float() / 255.0)
            expected = batcher.decode(batcher.denoise(latent, embeddings, stream.coefficients, stream.noise, control))[0]
        assert torch.allclose(out, expected, atol=1e-4), f"output {index} does not follow its own frame's edges"
    stream.close()


def _batched_and_alone(batcher: DenoisingBatcher, variants: list[dict], frames: list[np.ndarray]):
    together = [batcher.open_denoiser(params(steps=2, seed=i, **v), "a harbour") for i, v in enumerate(variants)]
    alone = [batcher.open_denoiser(params(steps=2, seed=i, **v), "a harbour") for i, v in enumerate(variants)]
    for stream in together + alone:
        settled(stream)
    calls_per_frame, batched, single = [], [], []
    for picture in frames:
        before = batcher.unet_calls
        tickets = [stream.submit(picture) for stream in together]
        batched.append([batcher.collect(t).clone() for t in tickets])
        calls_per_frame.append(batcher.unet_calls - before)
        single.append([stream.process(picture).clone() for stream in alone])
    for stream in together + alone:
        stream.close()
    return calls_per_frame, batched, single


def test_streams_with_and_without_control_share_one_unet_call(batcher: DenoisingBatcher) -> None:
    variants = [{"controlnet": "canny"}, {}, {"controlnet": "canny", "controlnet_scale": 1.7},
                {"controlnet": "depth", "controlnet_scale": 0.5}]
    frames = [scene_picture(), *pictures(2, seed=8, size=(96, 64))]
    calls, batched, single = _batched_and_alone(batcher, variants, frames)
    assert calls[1:] == [1, 1], "four streams (8 rows) with and without ControlNets should share one UNet call"
    for index, (together, alone) in enumerate(zip(batched, single, strict=True)):
        for stream, (a, b) in enumerate(zip(together, alone, strict=True)):
            assert torch.allclose(a, b, atol=1e-4), f"frame {index}: stream {stream} differs when batched"
    assert not torch.allclose(batched[-1][0], batched[-1][2], atol=1e-3)  # the scales really differ


def test_cuda_graph_replays_carry_the_condition_and_scales(batcher: DenoisingBatcher, monkeypatch) -> None:
    """The captured callable takes the condition pictures and scales as static inputs too, keyed
    by the ControlNets in the call: chunks of 2 rows with and without control each replay
    their own graph and every stream gets its own rows."""
    variants = [{"controlnet": "canny"}, {}, {"controlnet": "depth", "controlnet_scale": 1.3}]
    frames = [scene_picture(), *pictures(2, seed=4, size=(96, 64))]
    monkeypatch.setattr(batcher, "max_batch", 2)
    _, eager, _ = _batched_and_alone(batcher, variants, frames)
    graphs = CudaGraphUnet(batcher._eager, capture=static_buffer_capture)
    monkeypatch.setattr(batcher, "_unet", graphs)
    _, graphed, _ = _batched_and_alone(batcher, variants, frames)
    # rows [canny, canny], [none, none], [depth, depth] and, priming, single rows of each
    assert {key[0] for key in graphs._graphs} == {("canny",), (), ("depth",)}
    for index, (want, got) in enumerate(zip(eager, graphed, strict=True)):
        for stream, (a, b) in enumerate(zip(want, got, strict=True)):
            assert torch.allclose(a, b, atol=1e-5), f"frame {index}: stream {stream} got another stream's rows"


# ---- parameters, the generator and the effects ----------------------------------------------
def test_asking_for_a_controlnet_the_node_lacks_is_422(model_dir: Path) -> None:
    generator = DiffusionGenerator(DiffusionSettings(model=str(model_dir), taesd=None, allow_cpu=True), CPU)
    with pytest.raises(Unprocessable, match=r"generated\.controlnet: controlnet 'canny'.*diffusion\.controlnet is not set"):
        generator.scene("a beach", {"controlnet": "canny"})
    with pytest.raises(Unprocessable, match=r"diffusion\.controlnet_depth is not set"):
        generator.scene("a beach", {"controlnet": "depth"})
    with pytest.raises(Unprocessable, match=r"stylize\.controlnet"):
        StylizeEffect.create({"prompt": "ink", "controlnet": "sketch"})
    with pytest.raises(Unprocessable, match=r"generated\.controlnet_scale"):
        generator.scene("a beach", {"controlnet_scale": 2.5})
    with pytest.raises(Unprocessable, match="controlnet needs mode background"):
        generator.scene("a beach", {"controlnet": "canny", "mode": "scene"})
    with pytest.raises(Unprocessable) as refused:
        StylizeEffect.create({"prompt": "ink", "controlnet": "canny"}, EffectContext(generator=generator))
    assert refused.value.status == 422 and [e["field"] for e in refused.value.extra["errors"]] == ["controlnet"]
    assert "diffusion.controlnet is not set" in refused.value.extra["errors"][0]["message"]
    # a depth ControlNet without a depth estimator on the machine
    only_net = DiffusionSettings(model=str(model_dir), taesd=None, allow_cpu=True,
                               controlnet_depth=control_spec(model_dir)["controlnet_depth"])
    with pytest.raises(Unprocessable, match=r"depth estimator.*diffusion\.depth_model is not set"):
        DiffusionGenerator(only_net, CPU).scene("a beach", {"controlnet": "depth"})
    generator.close()


def test_a_configured_controlnet_that_did_not_load_is_422_with_its_reason(model_dir: Path, tmp_path: Path) -> None:
    settings = DiffusionSettings(model=str(model_dir), taesd=None, allow_cpu=True, controlnet=str(tmp_path / "absent"))
    generator = DiffusionGenerator(settings, CPU)
    generator.scene("a beach", {"controlnet": "canny"}).close()  # before loading: the setting is there
    generator.load()
    assert generator.unavailable() is None  # the model runs; only the control is off
    with pytest.raises(Unprocessable, match=r"controlnet 'canny' is unavailable on this node.*absent.*does not exist"):
        generator.scene("a beach", {"controlnet": "canny"})
    assert "canny" in generator.describe()["control_missing"]
    generator.close()


@pytest.fixture(scope="module")
def generator(model_dir: Path):
    settings = DiffusionSettings(model=str(model_dir), taesd=None, allow_cpu=True, **control_spec(model_dir))
    generator = DiffusionGenerator(settings, CPU)
    generator.load()
    assert generator.unavailable() is None, generator.unavailable()
    yield generator
    generator.close()


def test_stylize_follows_the_edges_and_retunes_the_scale_live(generator: DiffusionGenerator) -> None:
    assert generator.describe()["controlnets"] == ["canny", "depth"]
    raw = {"prompt": "stained glass", "size": SIZE, "similarity": 1.0, "controlnet": "canny"}
    effect = StylizeEffect.create(raw, EffectContext(generator=generator))
    stream = effect._scene._ensure_denoiser()
    settled(stream)
    picture = scene_picture()

    def frame_out(index: int) -> np.ndarray:
        frame = Frame(index, rgb=picture)
        effect.prepare(frame)
        effect.apply(frame)
        assert "controlnet_unavailable" not in frame.notes
        return frame.rgb

    first = frame_out(0)
    primes = stream.primes
    # the scale lands at the next frame, in place: same denoiser, no re-priming
    stronger = effect.Params.model_validate({**raw, "controlnet_scale": 1.8})
    assert effect.retunable(stronger)
    effect.retune(stronger)
    second = frame_out(1)
    assert effect._scene._denoiser is stream and stream.primes == primes
    assert stream.params.controlnet_scale == 1.8 and not np.array_equal(first, second)
    # another kind of control re-primes (the in-flight slots followed the old one)
    depth = effect.Params.model_validate({**raw, "controlnet": "depth"})
    assert effect.retunable(depth)
    effect.retune(depth)
    frame_out(2)
    assert stream.primes == primes + 1
    effect.close()


def test_retuning_to_a_controlnet_the_node_lacks_is_422_before_the_worker(model_dir: Path) -> None:
    generator = DiffusionGenerator(DiffusionSettings(model=str(model_dir), taesd=None, allow_cpu=True), CPU)
    effect = StylizeEffect.create({"prompt": "ink"}, EffectContext(generator=generator))
    with pytest.raises(Unprocessable, match=r"diffusion\.controlnet is not set"):
        effect.retunable(effect.Params.model_validate({"prompt": "ink", "controlnet": "canny"}))
    effect.close()
    generator.close()


def test_generated_background_keeps_the_scene_structure(generator: DiffusionGenerator) -> None:
    from livegen.effects.background import BackgroundEffect

    picture = scene_picture()
    mask = np.zeros((64, 96), np.float32)
    mask[:, 70:] = 1.0
    outputs = []
    for control in ({}, {"controlnet": "canny", "controlnet_scale": 1.5}):
        raw = {"mode": "generated", "prompt": "a cathedral",
               "generation": {"size": SIZE, "steps": 2, "similarity": 1.0, **control}}
        effect = BackgroundEffect.create(raw, EffectContext(generator=generator))
        settled(effect._scene._ensure_denoiser())
        frame = Frame(0, rgb=picture)
        frame.mask_rgb, frame.mask = mask, torch.from_numpy(mask)[None]
        effect.prepare(frame)
        effect.apply(frame)
        assert "background_fallback" not in frame.notes
        assert np.array_equal(frame.rgb[:, 70:], picture[:, 70:])
        outputs.append(frame.rgb)
        effect.close()
    assert not np.array_equal(outputs[0][:, :70], outputs[1][:, :70])


# ---- tools ----------------------------------------------------------------------------------
def test_models_pull_takes_a_controlnet_and_names_its_setting(model_dir: Path, monkeypatch, capsys) -> None:
    from livegen.diffusion import tools

    files = ["config.json", "diffusion_pytorch_model.bin", "diffusion_pytorch_model.fp16.safetensors",
             "diffusion_pytorch_model.safetensors", "README.md"]
    assert tools._weight_patterns(files) == ["diffusion_pytorch_model.fp16.safetensors"]
    assert tools._weight_patterns(["config.json", "diffusion_pytorch_model.bin"]) == ["diffusion_pytorch_model.bin"]
    places = tiny.control_folders(model_dir)
    pulled = {"someone/controlnet-canny": places["controlnet"], "someone/controlnet-depth": places["controlnet_depth"],
              "someone/dpt": places["depth_model"]}
    asked: list[str] = []

    def fake_pull(model_id: str, cache_dir=None, log=print) -> Path:
        asked.append(model_id)
        return pulled[model_id]

    monkeypatch.setattr(tools, "pull", fake_pull)
    for model_id, setting in (("someone/controlnet-canny", "diffusion.controlnet"),
                              ("someone/controlnet-depth", "diffusion.controlnet_depth"),
                              ("someone/dpt", "diffusion.depth_model")):
        args = argparse.Namespace(models_command="pull", model_id=model_id, taesd="madebyollin/taesd", cache_dir=None)
        assert tools.cmd_models(args) == 0
        assert f"done: set {setting} to the id" in capsys.readouterr().out
    assert asked == list(pulled)  # no TAESD pulled for single models


def test_doctor_lists_the_control_parts(model_dir: Path, tmp_path: Path) -> None:
    from livegen.diffusion.tools import doctor_lines

    spec = control_spec(model_dir)
    lines = "\n".join(doctor_lines(DiffusionSettings(model=str(model_dir), taesd=None, **spec)))
    assert f"diffusion.controlnet: found at {spec['controlnet']}" in lines
    assert f"diffusion.depth_model: found at {spec['depth_model']}" in lines
    broken = tmp_path / "broken"
    shutil.copytree(model_dir / "unet", broken)
    lines = "\n".join(doctor_lines(DiffusionSettings(model=str(model_dir), taesd=None, controlnet=str(broken))))
    assert "diffusion.controlnet: MISSING" in lines and "is not a ControlNet" in lines


# ---- on a GPU -------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_controlnet_on_cuda_with_graphs_matches_eager() -> None:
    """sd-turbo-sized UNet and ControlNet (random weights), fp16: canny made on the device, CUDA
    graphs with the condition and scales as static inputs match eager for a mixed batch."""
    from livegen.effects.generation import GenerationParams

    cuda = torch.device("cuda")
    models = tiny.build_models("sd-turbo", seed=0)
    models.controlnets["canny"] = tiny.build_controlnet(models.unet, seed=1, std=0.01)
    frames = [scene_picture(768, 432)] * 3
    results = []
    for options in ({}, {"cuda_graphs": True}):
        batcher = DenoisingBatcher(models, cuda, max_batch=4, **options)
        streams = [batcher.open_denoiser(GenerationParams(steps=2, size=512, seed=i, similarity=1.0, **v), "a hall")
                   for i, v in enumerate([{"controlnet": "canny"}, {}, {"controlnet": "canny", "controlnet_scale": 1.5}])]
        for stream in streams:
            assert stream.conditioning.wait(30.0) is not None
        outs = []
        for frame in frames:
            tickets = [s.submit(frame) for s in streams]
            outs.append([batcher.collect(t).float().cpu() for t in tickets])
            assert tickets[0].control.is_cuda and tickets[0].control.shape == (3, 288, 512)
        results.append((batcher.path, list(batcher.fallbacks), outs))
        for stream in streams:
            stream.close()
        batcher.close()
    (_, _, eager), (path, fallbacks, graphed) = results
    assert "cudagraph" in path and not fallbacks, (path, fallbacks)
    for want, got in zip(eager, graphed, strict=True):
        for a, b in zip(want, got, strict=True):
            assert torch.isfinite(b).all() and torch.allclose(a, b, atol=2e-2)
