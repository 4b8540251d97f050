"""What `eval` hands back: per-frame CSV/JSON, a terminal table, and a PNG plot of the curves."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from vividcli.errors import MediaError
from vividcli.files import commit_file, temp_path

__all__ = ["atomic_write", "per_frame_bytes", "print_table", "plot_png", "LABELS"]

LABELS = {"psnr": "PSNR RGB (dB)", "psnr_y": "PSNR Y (dB)", "ssim": "SSIM RGB", "ssim_y": "SSIM Y",
          "warp_error": "warping error", "flicker": "flicker (8-bit levels)", "lpips": "LPIPS"}


def atomic_write(path: Path, data: bytes, overwrite: bool) -> None:
    """Write `data` under a hidden temporary name beside `path`, then rename it into place
    (vividcli.files); without `overwrite`, a file that appeared meanwhile is kept."""
    path = Path(path)
    if not path.parent.is_dir():
        raise MediaError(f"output folder does not exist: {path.parent} (create it first)")
    tmp = temp_path(path.parent, path.name)
    try:
        tmp.write_bytes(data)
        commit_file(tmp, path, overwrite=overwrite)
    except FileExistsError:
        raise MediaError(f"{path} appeared while writing; kept it (pass --overwrite to replace)") from None
    except OSError as exc:
        raise MediaError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)


def _cell(value) -> str:
    return "" if value is None else repr(value) if isinstance(value, float) else str(value)


def per_frame_bytes(path: Path, records: list[dict], fields: list[str], summary: dict) -> bytes:
    """The per-frame file's contents: CSV (one row a frame) or JSON ({"summary", "frames"})."""
    if Path(path).suffix.lower() == ".json":
        return (json.dumps({"summary": summary, "frames": records}, indent=1) + "\n").encode()
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(fields)
    for record in records:
        writer.writerow([_cell(record.get(name)) for name in fields])
    return buffer.getvalue().encode()


def _fmt(name: str, value) -> str:
    if value is None:
        return "-"
    if name.startswith("psnr"):
        return f"{value:.2f}"
    if name == "warp_error":
        return f"{value:.3e}"
    return f"{value:.4f}"


def print_table(summary: dict, console: Console) -> None:
    """The summary as a rich table (output, and input when measured), then its notes."""
    table = Table(title=f"{summary['output']}: {summary['frames']} frames, {summary['width']}x{summary['height']}")
    table.add_column("metric")
    table.add_column("output", justify="right")
    has_input = "input" in summary
    if has_input:
        table.add_column("input", justify="right")
    for name, label in LABELS.items():
        if summary.get(name) is None and not (has_input and summary["input"].get(name) is not None):
            continue
        row = [label, _fmt(name, summary.get(name))]
        if has_input:
            row.append(_fmt(name, summary["input"].get(name)))
        table.add_row(*row)
    console.print(table)
    console.print(f"flow from the {summary['flow_from']} video")
    for note in summary.get("notes", []):
        console.print(f"note: {note}", markup=False, highlight=False)


def plot_png(records: list[dict], title: str) -> bytes:
    """Per-frame curves (one panel per metric family; output solid, input dashed) as PNG bytes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    families = [("PSNR (dB)", ["psnr", "psnr_y"]), ("SSIM", ["ssim", "ssim_y"]),
                ("warping error", ["warp_error"]), ("flicker (8-bit levels)", ["flicker"]), ("LPIPS", ["lpips"])]
    present = [(label, names) for label, names in families
               if any(r.get(n) is not None or r.get(f"input_{n}") is not None for r in records for n in names)]
    fig = Figure(figsize=(8, 2.2 * max(1, len(present))), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(max(1, len(present)), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (label, names) in zip(axes, present):
        for color, name in enumerate(names):  # one colour per metric, solid for the output, dashed for the input
            for prefix, style in (("", "-"), ("input_", "--")):
                points = [(r["frame"], r[prefix + name]) for r in records if r.get(prefix + name) is not None]
                if points:
                    xs, ys = zip(*points)
                    ax.plot(xs, ys, style, color=f"C{color}", linewidth=1.2,
                            label=f"{'input' if prefix else 'output'} {LABELS[name]}")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    axes[-1].set_xlabel("frame")
    axes[0].set_title(title, fontsize=9)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
