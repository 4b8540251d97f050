"""The one place that turns device and dtype names (`--device`, `--dtype`, API arguments) into torch's.

    device = resolve_device("auto")                 # torch.device("cuda") when a GPU is there, else cpu
    dtype = resolve_dtype("auto", device)           # bfloat16 on CUDA, float32 elsewhere

Bad names and CUDA requested where there is none are UsageErrors (one line, exit 2). torch is
imported only when a name is resolved, so commands can check their options before loading it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vividcli.errors import UsageError

if TYPE_CHECKING:
    import torch

DTYPE_NAMES = {"bfloat16": "bfloat16", "bf16": "bfloat16", "float16": "float16", "fp16": "float16",
               "half": "float16", "float32": "float32", "fp32": "float32"}


def check_device_name(name: str) -> None:
    """UsageError unless `name` is auto, cpu, cuda or cuda:N (no torch needed)."""
    index = name.removeprefix("cuda:")
    if name not in ("auto", "cpu", "cuda") and not (name.startswith("cuda:") and index.isdigit()):
        raise UsageError(f"--device must be auto, cpu, cuda or cuda:N, got {name!r}")


def dtype_name(name: str) -> str:
    """The canonical name ("bfloat16", "float16", "float32") of a dtype name or alias; "auto" stays."""
    if name == "auto":
        return name
    if str(name).lower().removeprefix("torch.") not in DTYPE_NAMES:
        raise UsageError(f"unknown dtype {name!r}: --dtype must be auto, bfloat16, float16 or float32")
    return DTYPE_NAMES[str(name).lower().removeprefix("torch.")]


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """auto (or None): CUDA when available, else the CPU; asking for CUDA without a GPU is a UsageError."""
    import torch

    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    check_device_name(str(device))
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {device} was requested but this torch ({torch.__version__}) sees no CUDA GPU; "
                         "use --device cpu (slow) or run on a machine with an NVIDIA GPU")
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device | str) -> torch.dtype:
    """auto (or None): bfloat16 on CUDA, float32 elsewhere; otherwise the named dtype."""
    import torch

    if isinstance(dtype, torch.dtype):
        name = str(dtype).removeprefix("torch.")
        if name not in DTYPE_NAMES:
            raise UsageError(f"unsupported dtype {name}: use bfloat16, float16 or float32")
        return dtype
    if dtype is None or dtype == "auto":
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    return getattr(torch, dtype_name(dtype))


def check_vivid_dtype(name: str) -> None:
    """The Vivid-VR models compute in bfloat16 or float32 only; float16 is refused with the reason."""
    if dtype_name(name) == "float16":
        raise UsageError("--dtype float16 is not supported by the vivid engine: the T5-v1.1 text encoder and the "
                         "CogVideoX transformer overflow in float16 (black or NaN frames); use bfloat16 (the default "
                         "on CUDA) or float32")



def local_rank_device(device: str, local_rank: int) -> str:
    """The device of one process of a launcher (torchrun, srun) that sets LOCAL_RANK.

    `auto` and `cuda` become `cuda:LOCAL_RANK` (made the current CUDA device, so that pinned host
    memory and other current-device allocations do not all land on GPU 0) when CUDA is available;
    without CUDA, and for `cpu` or an explicit `cuda:N`, the name is returned unchanged.
    """
    if device not in ("auto", "cuda"):
        return device
    import torch

    if not torch.cuda.is_available():
        return device  # auto: the CPU; cuda: resolve_device says there is no GPU
    count = torch.cuda.device_count()
    if not 0 <= local_rank < count:
        raise UsageError(f"LOCAL_RANK={local_rank} but this process sees {count} CUDA GPU(s); start at most {count} "
                         "processes per node, or pick the GPU with --device cuda:N")
    torch.cuda.set_device(local_rank)
    return f"cuda:{local_rank}"
