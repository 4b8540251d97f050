"""RealESRGANEngine: official Real-ESRGAN checkpoints through spandrel, tiling, the Engine contract.

Tests that load models need spandrel, which imports torchvision: they skip where it is missing
(the torch 2.13 venv has no torchvision; docs/textfix.md). The tiling arithmetic and the missing-
dependency error run everywhere.
"""

from __future__ import annotations

import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from extras import import_or_skip
from vividcli.engines.base import Engine, checked_restore
from vividcli.engines.realesrgan import RealESRGANEngine
from vividcli.errors import CheckpointError, UsageError, VividError
from vividcli.media.reader import ArraySource
from vividcli.models.realesrgan import TiledUpscaler, resolve_device_dtype, tile_starts

SPANDREL_REASON = "spandrel (and the torchvision it imports) not installed: see docs/textfix.md"


@pytest.fixture
def spandrel():
    return import_or_skip("spandrel", SPANDREL_REASON)


# --- official Real-ESRGAN (basicsr RRDBNet) checkpoints, built here with random or chosen weights ---

UNSHUFFLE = {1: 4, 2: 2, 4: 1}


def official_rrdbnet_state(scale: int = 2, num_feat: int = 16, num_block: int = 1, num_grow_ch: int = 32,
                           seed: int = 0, kind: str = "random") -> dict[str, torch.Tensor]:
    """A state dict with the official Real-ESRGAN key names (`conv_first`, `body.N.rdbR.convC`,
    `conv_body`, `conv_up1`, `conv_up2`, `conv_hr`, `conv_last`), as in RealESRGAN_x2plus.pth's `params_ema`.
    Growth channels stay 32 (spandrel assumes the official value); features and blocks shrink.

    kind="random": uniform conv weights with bound sqrt(2 / fan_in) (the signal neither dies nor saturates:
    output std ~0.1 around the output bias 0.5, almost nothing clamped), small biases.
    kind="box" (scale 2 only): a network whose output is the input averaged over 2x2 blocks, shown
    at twice the size (each block becomes 4x4 output pixels): the trunk is zeroed, conv_first copies
    the pixel-unshuffled channels, the up/hr convs are identities and conv_last averages the four
    sub-pixels of each colour. A stand-in for x2plus that keeps text legible.
    """
    r = UNSHUFFLE[scale]
    in_ch = 3 * r * r
    shapes: dict[str, tuple[int, int]] = {"conv_first": (num_feat, in_ch)}
    for b in range(num_block):
        for rdb in (1, 2, 3):
            for c in range(1, 6):
                shapes[f"body.{b}.rdb{rdb}.conv{c}"] = (num_grow_ch if c < 5 else num_feat,
                                                         num_feat + (c - 1) * num_grow_ch)
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        shapes[name] = (num_feat, num_feat)
    shapes["conv_last"] = (3, num_feat)
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for name, (out_ch, in_c) in shapes.items():
        if kind == "random":
            bound = (2 / (in_c * 9)) ** 0.5
            w = (torch.rand((out_ch, in_c, 3, 3), generator=gen) * 2 - 1) * bound
            bias = (torch.rand(out_ch, generator=gen) * 2 - 1) * 0.01
        else:
            w, bias = torch.zeros((out_ch, in_c, 3, 3)), torch.zeros(out_ch)
        state[f"{name}.weight"], state[f"{name}.bias"] = w, bias
    if kind == "random":
        state["conv_last.bias"] = torch.full((3,), 0.5)
    elif kind == "box":
        assert scale == 2 and num_feat >= in_ch
        for ch in range(in_ch):
            state["conv_first.weight"][ch, ch, 1, 1] = 1.0
        for name in ("conv_up1", "conv_up2", "conv_hr"):
            for ch in range(num_feat):
                state[f"{name}.weight"][ch, ch, 1, 1] = 1.0
        for color in range(3):
            for sub in range(4):  # pixel_unshuffle puts colour c, sub-pixel (i, j) at channel 4c + 2i + j
                state["conv_last.weight"][color, 4 * color + sub, 1, 1] = 0.25
    else:
        raise ValueError(kind)
    return state


def rrdbnet_forward(state: dict[str, torch.Tensor], x: torch.Tensor, scale: int) -> torch.Tensor:
    """The official RRDBNet forward, written out with torch.nn.functional (raw output, not clamped)."""
    def conv(name, t):
        return F.conv2d(t, state[f"{name}.weight"], state[f"{name}.bias"], padding=1)

    def lrelu(t):
        return F.leaky_relu(t, 0.2)

    num_block = len({k.split(".")[1] for k in state if k.startswith("body.")})
    feat = conv("conv_first", F.pixel_unshuffle(x, UNSHUFFLE[scale]) if UNSHUFFLE[scale] > 1 else x)
    trunk = feat
    for b in range(num_block):
        block_in = trunk
        for rdb in (1, 2, 3):
            xs = [trunk]
            for c in range(1, 5):
                xs.append(lrelu(conv(f"body.{b}.rdb{rdb}.conv{c}", torch.cat(xs, 1))))
            trunk = conv(f"body.{b}.rdb{rdb}.conv5", torch.cat(xs, 1)) * 0.2 + xs[0]
        trunk = trunk * 0.2 + block_in
    feat = feat + conv("conv_body", trunk)
    feat = lrelu(conv("conv_up1", F.interpolate(feat, scale_factor=2, mode="nearest")))
    feat = lrelu(conv("conv_up2", F.interpolate(feat, scale_factor=2, mode="nearest")))
    return conv("conv_last", lrelu(conv("conv_hr", feat)))


def save_official(path, state, ema: bool = True):
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save({"params_ema": state} if ema else state, path)
    return path


def frames(n: int = 3, h: int = 20, w: int = 28, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([x / w, y / h, 0.5 + 0.4 * np.sin(x / 3) * np.cos(y / 4)], -1)
    return [np.clip(base + rng.normal(0, 0.05, base.shape), 0, 1).astype(np.float32) for _ in range(n)]


def to_tensor(frame: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(frame).permute(2, 0, 1)[None]


# --- everywhere: tiling arithmetic and errors ---

@pytest.mark.parametrize("tile,overlap", [(8, 2), (16, 4), (512, 16), (33, 16)])
def test_tile_starts_cover_with_overlap(tile, overlap):
    for length in range(1, 3 * tile + 5):
        starts = tile_starts(length, tile, overlap)
        assert starts[0] == 0 and starts == sorted(set(starts))
        ends = [min(s + tile, length) for s in starts]
        assert ends[-1] == length and all(s + tile <= max(length, tile) for s in starts)
        for a, b in zip(starts, starts[1:]):
            assert a + tile - b >= overlap  # neighbours overlap by at least `overlap`


class _Req:
    def __init__(self, multiple_of: int):
        self.multiple_of = multiple_of

    def get_padding(self, w: int, h: int) -> tuple[int, int]:
        return -w % self.multiple_of, -h % self.multiple_of


class _Nearest(torch.nn.Module):
    def __init__(self, scale: int, multiple_of: int):
        super().__init__()
        self.scale, self.multiple_of = scale, multiple_of

    def forward(self, x):
        assert x.shape[-1] % self.multiple_of == 0 and x.shape[-2] % self.multiple_of == 0
        return F.interpolate(x, scale_factor=self.scale, mode="nearest") * 2 - 0.5  # raw: leaves [0, 1]


def fake_descriptor(scale=2, multiple_of=4):
    return SimpleNamespace(model=_Nearest(scale, multiple_of), scale=scale, size_requirements=_Req(multiple_of),
                           architecture=SimpleNamespace(name="fake"))


@pytest.mark.parametrize("tile,overlap", [(0, 0), (64, 16), (16, 4), (12, 5)])
def test_tiled_blend_reassembles_a_pointwise_model(tile, overlap):
    """With a pixel-wise model every tile agrees, so the feathered blend must give the untiled output;
    odd sizes exercise the padding to the model's size multiple and the crop back."""
    up = TiledUpscaler(fake_descriptor(), torch.device("cpu"), torch.float32, tile=tile, overlap=overlap)
    x = to_tensor(frames(1, 37, 50)[0])
    want = F.interpolate(x, scale_factor=2, mode="nearest") * 2 - 0.5
    got = up(x)
    assert got.shape == want.shape and got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)  # raw: not clamped


def test_tile_must_exceed_twice_the_overlap():
    with pytest.raises(UsageError):
        TiledUpscaler(fake_descriptor(), torch.device("cpu"), torch.float32, tile=32, overlap=16)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without a GPU")
def test_cuda_without_a_gpu_is_a_usage_error():
    with pytest.raises(UsageError, match="no CUDA"):
        resolve_device_dtype(fake_descriptor(), "cuda", None)


def test_dtype_defaults_and_names():
    d = SimpleNamespace(supports_half=False, supports_bfloat16=True, architecture=SimpleNamespace(name="fake"))
    assert resolve_device_dtype(d, "cpu", None) == (torch.device("cpu"), torch.float32)
    assert resolve_device_dtype(d, "cpu", "bf16")[1] == torch.bfloat16
    with pytest.raises(UsageError, match="float16"):
        resolve_device_dtype(d, "cpu", torch.float16)


def test_missing_spandrel_is_a_one_line_error(tmp_path, monkeypatch):
    model = tmp_path / "model.pth"
    model.write_bytes(b"not used")
    monkeypatch.setitem(sys.modules, "spandrel", None)  # `import spandrel` now raises ImportError
    with pytest.raises(VividError) as info:
        RealESRGANEngine(model)
    message = str(info.value)
    assert "\n" not in message and "pip install" in message and "spandrel" in message


def test_missing_model_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        RealESRGANEngine(tmp_path / "nope.pth")


# --- with spandrel: official checkpoints ---

@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.parametrize("fmt", ["params_ema.pth", "plain.pth", "model.safetensors"])
def test_official_layout_loads_and_matches_the_reference_forward(spandrel, tmp_path, scale, fmt):
    state = official_rrdbnet_state(scale=scale, seed=scale)
    path = save_official(tmp_path / f"x{scale}_{fmt}", state, ema=fmt.startswith("params_ema"))
    engine = RealESRGANEngine(path, tile=0, device="cpu")
    assert engine.model_scale == scale and engine.descriptor.architecture.id == "ESRGAN"
    assert engine.output_size(28, 20) == (28 * scale, 20 * scale)
    src = frames(2, 20, 28)
    out = list(engine.restore(ArraySource(src)))
    with torch.no_grad():
        want = [rrdbnet_forward(state, to_tensor(f), scale).clamp(0, 1)[0].permute(1, 2, 0).numpy() for f in src]
    for o, w in zip(out, want):
        assert o.dtype == np.float32 and o.shape == (20 * scale, 28 * scale, 3)
        assert 0 <= o.min() and o.max() <= 1 and o.std() > 0.01  # not a constant: the test has teeth
        np.testing.assert_allclose(o, w, rtol=0, atol=1e-5)


def test_engine_contract_and_odd_sizes(spandrel, tmp_path):
    """x2plus layout needs sides that are multiples of 4 (pixel unshuffle): odd frames are padded and
    cropped, and the untiled result equals spandrel's own (padding, clamping) call."""
    path = save_official(tmp_path / "x2.pth", official_rrdbnet_state(scale=2))
    engine = RealESRGANEngine(path, tile=0, device="cpu")
    assert isinstance(engine, Engine) and engine.name == "realesrgan"
    fs = frames(3, 23, 37)
    out = list(checked_restore(engine, ArraySource(fs)))
    assert len(out) == 3 and out[0].shape == (46, 74, 3)
    with torch.no_grad():
        own = engine.descriptor(to_tensor(fs[1]))[0].permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(out[1], own)


def test_tiling_is_exact_for_large_tiles_and_close_for_small(spandrel, tmp_path):
    path = save_official(tmp_path / "x2.pth", official_rrdbnet_state(scale=2, num_block=1))
    src = ArraySource(frames(1, 40, 56))
    whole = next(RealESRGANEngine(path, tile=0, device="cpu").restore(src))
    big = next(RealESRGANEngine(path, tile=56, device="cpu").restore(src))
    np.testing.assert_array_equal(big, whole)
    tiled = next(RealESRGANEngine(path, tile=24, overlap=8, device="cpu").restore(src))
    assert tiled.shape == whole.shape
    diff = np.abs(tiled - whole)
    # Tiles see zero padding instead of their neighbours near their edges; the feathered overlap
    # keeps that small. Not zero: this random net's receptive field (~40 input pixels) exceeds the
    # overlap, unlike a trained one's effective field (measured: mean 0.004, max 0.076, signal std 0.12).
    assert whole.std() > 0.05
    assert diff.mean() < 0.1 * whole.std() and diff.max() < 0.15, (diff.mean(), diff.max())


def test_scale_override_resizes_the_model_output(spandrel, tmp_path):
    path = save_official(tmp_path / "x4.pth", official_rrdbnet_state(scale=4))
    engine = RealESRGANEngine(path, scale=2, tile=0, device="cpu")
    assert engine.model_scale == 4 and engine.output_size(28, 20) == (56, 40)
    assert engine.output_size(15, 9) == (30, 18)
    f = frames(1, 20, 28)[0]
    out = engine.upscale_frame(f)
    with torch.no_grad():
        raw = rrdbnet_forward(official_rrdbnet_state(scale=4), to_tensor(f), 4)
        want = F.interpolate(raw, size=(40, 56), mode="bicubic", antialias=True).clamp(0, 1)[0].permute(1, 2, 0)
    np.testing.assert_allclose(out, want.numpy(), rtol=0, atol=1e-5)


def test_unsupported_file_is_a_checkpoint_error(spandrel, tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"some.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(CheckpointError, match="spandrel"):
        RealESRGANEngine(path)


def test_cpu_defaults_to_float32_and_unknown_dtypes_are_refused(spandrel, tmp_path):
    path = save_official(tmp_path / "x2.pth", official_rrdbnet_state(scale=2))
    assert RealESRGANEngine(path, device="cpu").dtype == torch.float32
    with pytest.raises(UsageError):
        RealESRGANEngine(path, device="cpu", dtype="float8")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_defaults_to_float16_and_matches_float32(spandrel, tmp_path):
    path = save_official(tmp_path / "x2.pth", official_rrdbnet_state(scale=2, num_feat=32, num_block=2))
    half = RealESRGANEngine(path, device="cuda", tile=32, overlap=8)
    assert half.dtype == torch.float16
    full = RealESRGANEngine(path, device="cuda", dtype=torch.float32, tile=32, overlap=8)
    f = frames(1, 72, 96)[0]
    a, b = half.upscale_frame(f), full.upscale_frame(f)
    assert a.dtype == np.float32 and a.shape == (144, 192, 3)
    assert np.abs(a - b).max() < 2e-2
