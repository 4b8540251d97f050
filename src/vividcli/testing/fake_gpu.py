"""A restoration on a simulated GPU: real models and pipeline code, fake tensors, live bytes per device and stage.

`run_dry(DryRunSpec(...))` builds the Vivid-VR models (full CogVideoX1.5-5B sizes, or the tiny test
sizes) inside torch's `FakeTensorMode`, where tensors have shapes, dtypes and devices but no data,
so a fake `cuda` device works on a CPU-only machine; then it runs `vividcli.pipeline.restore_frames`
with one denoising step and reports the peak live bytes of each device in each stage. Used by
benchmarks/vram_dry_run.py (full size) and tests/test_vram_dry_run.py (tiny). The pitfalls it
works around are in ../shared/docs/performance.md ("Simulating a GPU on a CPU-only machine").

What is patched for the run, and why (everything else is the project's code as it is):

* attention: `F.scaled_dot_product_attention` goes to the flash kernel's op, because on a fake
  device SDPA falls back to the math path, which allocates the full N x N scores a GPU never does;
* values read from tensors (`.item()`, comparisons) are 0, and `pin_memory()` is a host copy: see
  `DatalessOps`;
* frames: `pipeline.read_control_video` makes the same host tensors as the real one from no data
  (the real one decodes a file into numpy), and a fake tensor's `.numpy()` gives zeros without
  allocating (the pipeline's last step hands frames to numpy);
* `module.to(...)` of fake parameters (see `fake_mode`), and `param.data = tensor`, which keeps a
  fake tensor's device as it was (diffusers' offload hooks move weights that way);
* `torch.Generator(device="cuda")` and CUDA streams need a driver: a CPU generator (fake mode draws
  on any device with it) and streams that order nothing (`NoStream`);
* stage marks: the pipeline's progress stages (encode, denoise, decode) plus wrappers that mark
  T5 (`text`: its move to the device, the prompts, its move back) and the clip merge (`merge`).
"""

from __future__ import annotations

import weakref
from contextlib import ExitStack, contextmanager, nullcontext
from typing import Iterator
from unittest import mock

import numpy as np
import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import DataDependentOutputException, FakeTensor, FakeTensorMode
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

STAGES = ("load", "encode", "text", "denoise", "merge", "decode")


class LiveBytes(TorchDispatchMode):
    """Bytes of live storages per device type ("cuda", "cpu"), and their peak in each stage.

    A storage is counted once, when an op first returns a tensor on it, and dropped when it dies
    (weakref finalizer; under FakeTensorMode a storage keeps one Python object). Views share their
    storage, so weights must be registered before the run, or `aten.t` of a weight would count it again.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[str, int] = {"cuda": 0, "cpu": 0}
        self.peaks: dict[str, dict[str, int]] = {"cuda": {}, "cpu": {}}
        self.stage = "load"
        self._seen: dict[int, tuple[str, int]] = {}

    def set_stage(self, name: str) -> None:
        self.stage = name
        self._note_peak()

    def register(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key = id(storage)
        if key in self._seen:
            return
        device, size = tensor.device.type, storage.nbytes()
        self._seen[key] = (device, size)
        self.live[device] = self.live.get(device, 0) + size
        weakref.finalize(storage, self._drop, key)
        self._note_peak()

    def register_module(self, module: torch.nn.Module) -> None:
        for tensor in (*module.parameters(), *module.buffers()):
            self.register(tensor)

    def _drop(self, key: int) -> None:
        device, size = self._seen.pop(key)
        self.live[device] -= size

    def _note_peak(self) -> None:
        for device, peaks in self.peaks.items():
            peaks[self.stage] = max(peaks.get(self.stage, 0), self.live.get(device, 0))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in tree_flatten(out)[0]:
            if isinstance(value, torch.Tensor):
                self.register(value)
        return out


class DatalessOps(TorchDispatchMode):
    """The few ops FakeTensorMode cannot do, done as a GPU machine would for memory's sake.

    * Reading a value (`.item()`, `x.min() < 0`) gives 0 of its dtype. The pipeline reads values
      only to steer control flow: the VAE input's minimum (real frames are in [0, 1]; 0 keeps that
      branch) and the scheduler's timestep checks. None of them changes a tensor's size.
    * `pin_memory()` (not implemented for fake tensors) makes a new host tensor of the same size,
      as pinning does: page-locked memory is a fresh allocation and the data is copied into it; and
      `is_pinned()` is true for exactly those tensors (so diffusers does not pin them again).
    """

    def __init__(self) -> None:
        super().__init__()
        self._pinned: dict[int, weakref.ref] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._pin_memory.default:
            pinned = torch.empty_like(args[0])
            storage = pinned.untyped_storage()
            self._pinned[id(storage)] = weakref.ref(storage)
            return pinned
        if func is torch.ops.aten.is_pinned.default:
            storage = args[0].untyped_storage()
            ref = self._pinned.get(id(storage))
            return ref is not None and ref() is storage
        try:
            return func(*args, **(kwargs or {}))
        except DataDependentOutputException:
            if func is not torch.ops.aten._local_scalar_dense.default:
                raise
            dtype = args[0].dtype
            return False if dtype == torch.bool else (0.0 if dtype.is_floating_point else 0)


class FlashAttention(TorchFunctionMode):
    """Plain SDPA calls (no mask, no dropout) run as the flash kernel's op: output + log-sum-exp only."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention and kwargs.get("attn_mask") is None and len(args) == 3:
            if not kwargs.get("dropout_p") and not kwargs.get("enable_gqa"):
                query, key, value = args
                return torch.ops.aten._scaled_dot_product_flash_attention(
                    query, key, value, is_causal=bool(kwargs.get("is_causal")), scale=kwargs.get("scale"))[0]
        return func(*args, **kwargs)


class StageProgress:
    """A `Progress` that marks the tracker's stage when the pipeline announces one."""

    def __init__(self, tracker: LiveBytes):
        self.tracker = tracker

    def stage(self, name: str, total: int | None) -> None:
        if name in STAGES:
            self.tracker.set_stage(name)

    def advance(self, n: int = 1) -> None:
        pass


def marked(tracker: LiveBytes, stage: str, function):
    """`function` with the tracker in `stage` while it runs (then back in the stage it was called in)."""

    def wrapper(*args, **kwargs):
        previous = tracker.stage
        tracker.set_stage(stage)
        try:
            return function(*args, **kwargs)
        finally:
            tracker.set_stage(previous)

    return wrapper


def fake_read_control_video(source, start: int, stop: int, plan) -> torch.Tensor:
    """`pipeline.read_control_video` from no data, with the same host tensors: the decoded float32
    frames (list, then stacked by numpy), the [F, C, H, W] contiguous copy, the upscaled video."""
    from vividcli.stages.resize import upscale_video

    shape = (stop - start, source.height, source.width, 3)
    decoded = torch.empty(shape)  # the list of frames np.stack reads
    frames = torch.empty(shape)  # the stacked array (torch.from_numpy shares it)
    del decoded
    video = frames.permute(0, 3, 1, 2).contiguous()
    return upscale_video(video, plan.geometry.scale_factor)


def zeros_numpy(tensor: torch.Tensor, *args, **kwargs) -> np.ndarray:
    """`.numpy()` of a fake tensor: read-only zeros of its shape, no memory (there is no data)."""
    dtype = {torch.float32: np.float32, torch.uint8: np.uint8}.get(tensor.dtype, np.float32)
    return np.broadcast_to(np.zeros((), dtype), tuple(tensor.shape))


class HostGenerator(torch.Generator):
    """`torch.Generator(device=...)` that always lives on the CPU (no CUDA driver in a dry run)."""

    def __new__(cls, device=None):
        return super().__new__(cls, "cpu")

    def __init__(self, device=None):
        pass  # made by __new__


_TENSOR_DATA = torch._C.TensorBase.data


def _get_data(tensor: torch.Tensor) -> torch.Tensor:
    return _TENSOR_DATA.__get__(tensor)


def _set_data(tensor: torch.Tensor, new: torch.Tensor) -> None:
    # A fake tensor reports the device it was made on (`fake_device`), which `param.data = ...`
    # leaves as it was; diffusers' offload hooks move weights exactly that way.
    _TENSOR_DATA.__set__(tensor, new)
    if isinstance(new, FakeTensor):
        tensor.fake_device = new.fake_device


def forget_constants(module: torch.nn.Module) -> None:
    """Treat every fake weight as data-free.

    A fake tensor made from Python numbers (AlphaBlender's `mix_factor = torch.Tensor([alpha])`)
    keeps them as a real "constant", and ops on constants run for real, on the CPU, whatever device
    the weight was since moved to: the result would land on the wrong device.
    """
    for tensor in (*module.parameters(), *module.buffers()):
        if isinstance(tensor, FakeTensor) and tensor.constant is not None:
            tensor.constant = None


class NoStream:
    """A CUDA stream that orders nothing: fake tensors need no synchronisation, and creating a real
    stream needs a driver. diffusers' group offloading still prefetches in the same order with it."""

    def __init__(self, *args, **kwargs) -> None:
        pass

    def synchronize(self) -> None:
        pass

    def wait_stream(self, stream) -> None:
        pass


@contextmanager
def dry_run_patches(tracker: LiveBytes) -> Iterator[None]:
    """Everything the dry run changes, undone on exit (see the module docstring)."""
    import vividcli.pipeline as pipeline
    import vividcli.sampling.sampler as sampler

    with ExitStack() as stack:
        stack.enter_context(mock.patch.object(pipeline, "read_control_video", fake_read_control_video))
        stack.enter_context(mock.patch.object(pipeline, "encode_prompts",
                                              marked(tracker, "text", pipeline.encode_prompts)))
        stack.enter_context(mock.patch.object(sampler, "merge_clips", marked(tracker, "merge", sampler.merge_clips)))
        stack.enter_context(mock.patch.object(FakeTensor, "numpy", zeros_numpy, create=True))
        stack.enter_context(mock.patch.object(FakeTensor, "data", property(_get_data, _set_data), create=True))
        stack.enter_context(mock.patch.object(torch, "Generator", HostGenerator))
        stack.enter_context(mock.patch.object(torch.cuda, "Stream", NoStream))
        stack.enter_context(mock.patch.object(torch.cuda, "current_stream", lambda *args, **kwargs: NoStream()))
        stack.enter_context(mock.patch.object(torch.cuda, "stream", lambda stream: nullcontext()))
        yield


@contextmanager
def fresh_caches() -> Iterator[None]:
    """The sampler's RoPE caches hold tensors of the mode they were made in: empty them around a run."""
    from vividcli.sampling.sampler import device_rotary_embedding, rotary_embedding

    for cache in (rotary_embedding, device_rotary_embedding):
        cache.cache_clear()
    try:
        yield
    finally:
        for cache in (rotary_embedding, device_rotary_embedding):
            cache.cache_clear()


@contextmanager
def fake_mode() -> Iterator[FakeTensorMode]:
    """A FakeTensorMode (entered) in which `module.to(device or dtype)` works.

    `Module._apply` swaps fake parameters in place (`torch.utils.swap_tensors`), which refuses a
    tensor that anything holds a weak reference to, and the mode's converter memoises every fake
    tensor it makes in a WeakValueDictionary (and constants in lists of weak references). Before each
    swap the two tensors leave both (they only serve to convert the same real tensor twice and to
    track constants, neither of which a parameter on its way to another device needs).
    """
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    converter = mode.fake_tensor_converter
    swap_tensors = torch.utils.swap_tensors

    def forget(tensor: torch.Tensor) -> None:
        # Memo entries are KeyedRefs; constants (e.g. AlphaBlender's mix factor, made from a Python
        # list) are also listed by storage. Hold no reference to either past this function.
        keys = [getattr(ref, "key", None) for ref in weakref.getweakrefs(tensor)]
        for key in keys:
            if key is not None and converter.tensor_memo.get(key) is tensor:
                del converter.meta_converter.tensor_memo[key]
        for refs in converter.constant_storage_mapping.values():
            refs[:] = [ref for ref in refs if ref() is not tensor]

    def swap_forgetting_memo(first: torch.Tensor, second: torch.Tensor) -> None:
        forget(first)
        forget(second)
        swap_tensors(first, second)

    with mock.patch.object(torch.utils, "swap_tensors", swap_forgetting_memo), mode:
        yield mode
