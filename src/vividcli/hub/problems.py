"""A problem found in the checkpoint folder (one line each), and the index of tensors found so far;
shared by the file checks (`verify.py`) and the key/shape checks (`shapes.py`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from vividcli.errors import first_line


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the checkpoint folder: the file, the key (if any), what is wrong. One line."""

    file: Path
    message: str
    key: str | None = None

    def __str__(self) -> str:
        where = f"{self.file}: key '{self.key}'" if self.key else str(self.file)
        return first_line(f"{where}: {self.message}", limit=400)


MAX_KEY_PROBLEMS = 5  # per file and kind; the rest is summed up in one line


@dataclass
class TensorIndex:
    """Key -> (shape, file) of the tensors found, and the files that could not be read."""

    shapes: dict[str, tuple[tuple[int, ...], Path]] = field(default_factory=dict)
    broken: set[Path] = field(default_factory=set)
