"""Optional LPIPS (Zhang et al. 2018, AlexNet variant v0.1) from weights already on disk.

The `lpips` package ships the small calibration layers but would download the AlexNet backbone
from torchvision at first use; vividvr never downloads at run time, so the backbone comes from
`--lpips-weights FILE`: either torchvision's AlexNet checkpoint (`alexnet-owt-7be5be79.pth`, keys
`features.*`) or a whole LPIPS state dict (keys `net.slice*` and `lin*`, as
`torch.save(lpips.LPIPS().state_dict(), FILE)` writes). Without the file, or without the `lpips`
package (`pip install 'vividcli[lpips]'`), LPIPS is skipped with a one-line note.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from vividcli.errors import CheckpointError

__all__ = ["load_lpips"]

# torchvision AlexNet `features` index -> LPIPS slice holding that layer
_SLICE_OF = {0: 1, 3: 2, 6: 3, 8: 4, 10: 5}


def _backbone_keys(state: dict) -> dict:
    """torchvision AlexNet keys (features.N.weight) -> LPIPS keys (net.sliceK.N.weight)."""
    mapped = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "features" and int(parts[1]) in _SLICE_OF:
            mapped[f"net.slice{_SLICE_OF[int(parts[1])]}.{parts[1]}.{parts[2]}"] = value
    return mapped


def load_lpips(path: Path | None) -> tuple[Callable[[np.ndarray, np.ndarray], float] | None, str | None]:
    """(metric, None), or (None, the one-line note saying why LPIPS is skipped)."""
    if path is None:
        return None, "LPIPS skipped: no --lpips-weights given (nothing is downloaded)"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import lpips
            import torch
    except ImportError:
        return None, "LPIPS skipped: the lpips package is not installed (pip install 'vividcli[lpips]')"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read --lpips-weights {path}: {type(exc).__name__} (expected a torch "
                              "checkpoint of AlexNet or of LPIPS)") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's deprecation notes about `pretrained`
        model = lpips.LPIPS(net="alex", version="0.1", pnet_rand=True, verbose=False)
    backbone = _backbone_keys(state) if "features.0.weight" in state else \
        {k: v for k, v in state.items() if k.startswith(("net.", "lin"))}
    wanted = {k for k in model.state_dict() if k.startswith("net.")}
    if not wanted <= set(backbone):
        raise CheckpointError(f"--lpips-weights {path} holds no AlexNet weights (looked for features.* or "
                              "net.slice*.* keys)")
    try:
        model.load_state_dict(backbone, strict=False)
    except RuntimeError as exc:
        raise CheckpointError(f"--lpips-weights {path} does not fit AlexNet: {str(exc).splitlines()[0]}") from None
    model.eval()

    def metric(ref: np.ndarray, out: np.ndarray) -> float:
        to_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None]  # noqa: E731
        with torch.no_grad():
            return float(model(to_tensor(ref), to_tensor(out), normalize=True).item())

    return metric, None
