"""examples/benchmark.sh runs as documented: degrade -> restore with each engine -> eval -> compare -> report."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from quality_clips import pan, write_clip
from vividcli.media.probe import probe

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "benchmark.sh"


@pytest.mark.slow
def test_benchmark_script_reports_every_engine(tmp_path, tiny_ckpt_dir):
    clean = tmp_path / "clean.mp4"
    write_clip(clean, pan(), 9, audio=True)
    out = tmp_path / "bench"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "CKPT_DIR": str(tiny_ckpt_dir), "VIVID_ARGS": "--tile-size 4 --steps 1",
           "VIVIDVR_CACHE_DIR": str(tmp_path / "cache"), "PRESET": "strong", "SEED": "3"}
    done = subprocess.run(["bash", str(SCRIPT), str(clean), str(out)], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    report = (out / "report.md").read_text()
    for name in ("degraded", "restored_classic", "restored_vivid"):
        summary = json.loads((out / f"{name}.json").read_text())
        assert summary["frames"] == 9 and 5 < summary["psnr"] < 100 and summary["warp_error"] is not None
        assert re.search(rf"^\| {name} \| \d+\.\d\d \|", report, re.M), report
        assert (out / f"{name}.png").is_file() and (out / f"{name}.csv").is_file()
    for image in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report):
        Image.open(out / image).verify()  # every picture the report shows exists and is a PNG
    assert probe(out / "compare.mp4").num_frames == 9
    assert "--preset strong --seed 3" in report


@pytest.mark.slow
def test_quality_throughput_benchmark_runs_in_tiny_mode(tmp_path):
    """benchmarks/quality_throughput.py (docs/benchmarks.md section 4) keeps working: a tiny run."""
    result = tmp_path / "result.json"
    done = subprocess.run([sys.executable, str(SCRIPT.parents[1] / "benchmarks" / "quality_throughput.py"),
                           "--height", "48", "--frames", "6", "--rss-frames", "6", "--repeats", "1",
                           "--presets", "light", "--json", str(result)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    report = json.loads(result.read_text())
    assert set(report["summary"]["degrade"]) == {"plain", "identity", "light"}
    assert report["summary"]["eval"]["eval"]["fps_median"] > 0
    rss = report["rss"]["6"]
    assert rss["degrade"]["exit"] == rss["eval"]["exit"] == 0 and rss["eval"]["peak_rss_mib"] > 10
