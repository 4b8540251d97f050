"""Mistakes are reported before the heavy imports: a wrong path, option value or checkpoint folder
never waits for torch and diffusers (seconds on a loaded machine) to say so."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from vividcli.config import RestoreOptions
from vividcli.media.reader import open_source
from vividcli.planning.plan import plan_restoration
from vividcli.testing.media import make_av_mp4

# Runs the real CLI in a fresh interpreter and reports the exit code, stderr and whether torch was imported.
PROBE = """
import json, sys
from typer.testing import CliRunner
from vividcli.cli import app
result = CliRunner().invoke(app, sys.argv[1:])
print(json.dumps({"code": result.exit_code, "stderr": result.stderr, "torch": "torch" in sys.modules}))
"""


def run_cli(*args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return make_av_mp4(tmp_path_factory.mktemp("in") / "in.mp4", num_frames=2)


@pytest.mark.parametrize(("args", "code", "needle"), [
    (["restore", "missing.mp4", "-o", "OUT"], 2, "does not exist"),
    (["restore", "IN", "-o", "OUT", "--tile-size", "7"], 2, "--tile-size"),
    (["restore", "IN", "-o", "OUT", "--device", "gpu"], 2, "--device"),
    (["restore", "IN", "-o", "OUT", "--dtype", "float13"], 2, "dtype"),
    (["restore", "IN", "-o", "OUT", "--fps", "0"], 2, "frame rate"),
    (["restore", "IN", "-o", "OUT", "--ckpt-dir", "NOWHERE"], 1, "does not exist"),
    (["restore", "IN", "-o", "OUT", "--crf", "99"], 2, "--crf"),
    (["restore", "IN", "-o", "OUT", "--dtype", "float16"], 2, "overflow"),
    (["caption", "missing.mp4", "-o", "OUT"], 2, "does not exist"),
    (["caption", "IN", "-o", "OUT", "--clip-frames", "20"], 2, "8k+1"),
])
def test_usage_errors_come_before_torch_is_imported(tmp_path, video, args, code, needle) -> None:
    args = [{"IN": str(video), "OUT": str(tmp_path / "out.mp4"), "NOWHERE": str(tmp_path / "nowhere")}.get(a, a)
            for a in args]
    result = run_cli(*args)
    assert result["code"] == code, result
    assert needle in result["stderr"] and len(result["stderr"].strip().splitlines()) == 1, result
    assert not result["torch"], "torch was imported before the mistake was reported"


def test_caption_takes_the_checkpoint_folder_like_restore(tmp_path, video) -> None:
    """The options of a restore command line that shape the plan or the models work for caption too."""
    out = tmp_path / "c.json"
    result = run_cli("caption", str(video), "-o", str(out), "--ckpt-dir", str(tmp_path), "--upscale", "2",
                     "--tile-size", "8", "--clip-frames", "9", "--device", "cpu", "--dtype", "float32")
    assert result["code"] == 0, result
    source = open_source(video)
    plan = plan_restoration(source.num_frames, source.height, source.width,
                            RestoreOptions(upscale=2, tile_size=8, clip_frames=9))
    assert len(plan.tiles) > 1
    assert json.loads(out.read_text()) == [[""] * len(plan.tiles)]
