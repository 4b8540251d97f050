"""The examples in examples/ run as documented (so they cannot rot)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from vividcli.testing.media import make_av_mp4, make_text

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_restore_frames_example_on_the_tiny_checkpoint(tmp_path, tiny_ckpt_dir):
    src = make_av_mp4(tmp_path / "in.mp4", num_frames=5)
    done = subprocess.run([sys.executable, str(EXAMPLES / "restore_frames.py"), str(src), str(tmp_path / "out"),
                           "--ckpt-dir", str(tiny_ckpt_dir), "--upscale", "1", "--tile-size", "4", "--steps", "1"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    frames = sorted((tmp_path / "out").glob("*.png"))
    assert len(frames) == 5 and "5 frames at" in done.stdout
    assert np.asarray(Image.open(frames[0])).shape[2] == 3


def test_batch_example_reports_and_exits_1_for_a_bad_input(tmp_path):
    clips = tmp_path / "clips"
    (clips / "sub").mkdir(parents=True)
    make_av_mp4(clips / "a.mp4", num_frames=2)
    make_av_mp4(clips / "sub" / "b.mp4", num_frames=2)
    make_text(clips / "broken.mp4")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(["bash", str(EXAMPLES / "batch.sh"), str(clips), str(tmp_path / "restored"),
                           "--engine", "classic", "--upscale", "1"], capture_output=True, text=True, env=env)
    assert done.returncode == 1, done.stderr
    statuses = {Path(line.split()[1]).name: line.split()[0] for line in done.stdout.splitlines()}
    assert statuses == {"a.mp4": "done", "b.mp4": "done", "broken.mp4": "failed"}
    assert (tmp_path / "restored" / "sub" / "b.mp4").is_file()
    report = json.loads((tmp_path / "restored.report.json").read_text())
    assert report["exit_code"] == 1
