"""Model management: what can be downloaded, where it goes, and what is on disk.

    registry   the components (`COMPONENTS`, `GROUPS`, `DEFAULT_GROUP`; files from `models/layout.py`), revision pins,
               `resolve_ckpt_dir`
    download   `download`, offline mode and network errors as one-line `VividError`s
    verify     `list_models` / `ComponentStatus`, `verify`, file and safetensors header checks
    shapes     keys and shapes against the model classes built on the meta device (used by `verify`)
    problems   `Problem` (one line each), shared by verify and shapes

Nothing heavy is imported here: `path`, `list` and `download` stay fast; only `verify` imports torch and
the model classes. The names below are the public API (`from vividcli import hub; hub.verify(...)`).
The functions `download` and `verify` hide the submodules of the same name as attributes of this
package; `from vividcli.hub.verify import ...` still reaches the module.
"""

from vividcli.hub.download import download
from vividcli.hub.problems import MAX_KEY_PROBLEMS, Problem
from vividcli.hub.registry import (
    CAPTIONER,
    CAPTIONER_REVISION,
    CHOICES,
    CKPT_ENV,
    COGVIDEOX,
    COGVIDEOX_REVISION,
    COMPONENTS,
    DEFAULT_GROUP,
    DOCS_HINT,
    GROUPS,
    REALESRGAN_SHA256,
    REALESRGAN_SIZE,
    REALESRGAN_URL,
    TEXTFIX,
    VIVIDVR,
    VIVIDVR_REVISION,
    Component,
    default_ckpt_dir,
    download_command,
    missing_files,
    resolve_ckpt_dir,
    sha256_file,
)
from vividcli.hub.verify import (
    ComponentStatus,
    list_models,
    read_safetensors_header,
    verify,
)

__all__ = [
    "CAPTIONER",
    "CAPTIONER_REVISION",
    "CHOICES",
    "CKPT_ENV",
    "COGVIDEOX",
    "COGVIDEOX_REVISION",
    "COMPONENTS",
    "DEFAULT_GROUP",
    "DOCS_HINT",
    "GROUPS",
    "MAX_KEY_PROBLEMS",
    "REALESRGAN_SHA256",
    "REALESRGAN_SIZE",
    "REALESRGAN_URL",
    "TEXTFIX",
    "VIVIDVR",
    "VIVIDVR_REVISION",
    "Component",
    "ComponentStatus",
    "Problem",
    "default_ckpt_dir",
    "download",
    "download_command",
    "list_models",
    "missing_files",
    "read_safetensors_header",
    "resolve_ckpt_dir",
    "sha256_file",
    "verify",
]
