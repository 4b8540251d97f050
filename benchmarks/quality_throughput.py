"""Throughput of `vividvr degrade` and `vividvr eval`, and their peak RSS against video length.

Reports numbers; asserts nothing (exit status 0 unless something crashed). docs/benchmarks.md
section "Measuring commands" describes a run.

1. Degrade, in this process, on a synthetic clip (default 1280x720, 240 frames, 24 fps, H.264 +
   AAC), alternating `--repeats` times so that the variants share the host's load swings:
     * plain:     PyAV decode (thread_type AUTO) -> rgb24 ndarray -> libx264 with the degraded
                  file's encoder settings (crf 18, preset veryfast, yuv420p), video only: the
                  ceiling, a decode + encode with no work in between;
     * identity:  `degrade_video` with structural and photometric "none": our reader and writer
                  (float RGB, accurate swscale, audio copy), i.e. the media layer's own cost;
     * <preset>:  `degrade_video` with each of `--presets` (structural presets), encode included.
   fps = frames / wall seconds; CPU seconds of this process (all threads) per frame too.
2. Eval, in this process: `evaluate(output=<degraded by the first preset>, ref=clean)` (PSNR and
   SSIM on RGB and Y, warping error, flicker), and the decode of the same two videos alone.
3. Peak RSS against length: `vividvr eval DEGRADED --ref CLEAN --quiet` and `vividvr degrade CLEAN
   -o OUT --preset P --quiet` on clips of each of `--rss-frames`, each in a fresh child process;
   peak RSS = the child's VmHWM, polled from /proc every 0.1 s (see child_rss).

    .venv/bin/python benchmarks/quality_throughput.py [--height 720] [--frames 240]
        [--rss-frames 120 480] [--repeats 2] [--presets medium strong]
        [--json benchmarks/results/quality_throughput.json] [--workdir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import av
import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FPS = 24
MY_FILES = ["src/vividcli/quality", "src/vividcli/commands/degrade.py", "src/vividcli/commands/evaluate.py",
            "src/vividcli/media"]


def cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def machine() -> dict:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu_model": model, "python": platform.python_version(),
            "platform": platform.platform(), "pyav": av.__version__, "opencv": cv2.__version__,
            "opencv_threads": cv2.getNumThreads(), "numpy": np.__version__}


def provenance() -> dict:
    def git(*a: str) -> str:
        try:
            return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    return {"git_head": git("rev-parse", "--short", "HEAD"),
            "uncommitted": git("status", "--short", "--", *MY_FILES).splitlines()}


def make_clip(path: Path, frames: int, width: int, height: int, seed: int = 11) -> None:
    """H.264 (libx264 fast, crf 23) + stereo AAC, generated frame by frame: a smooth texture panned
    diagonally, a moving square and mild grain (camera-like content, so flow and x264 have work)."""
    rng = np.random.default_rng(seed)
    pad = 2 * frames + 16
    small = rng.random(((height + pad) // 12 + 2, (width + pad) // 12 + 2, 3)).astype(np.float32)
    tex = cv2.resize(small, (width + pad, height + pad), interpolation=cv2.INTER_CUBIC)
    tex = np.clip(tex * 200 + 25, 0, 255).astype(np.uint8)
    grain = [rng.integers(-3, 4, size=(height, width, 1), dtype=np.int16) for _ in range(8)]
    box = max(8, height // 6)
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=FPS, options={"preset": "fast", "crf": "23"})
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        aus = out.add_stream("aac", rate=48000, layout="stereo")
        samples = 0
        for i in range(frames):
            img = tex[2 * i: 2 * i + height, i: i + width].astype(np.int16) + grain[i % 8]
            x = (i * 5) % max(1, width - box)
            img[(height - box) // 2:(height + box) // 2, x:x + box] = 230
            vf = av.VideoFrame.from_ndarray(np.clip(img, 0, 255).astype(np.uint8), format="rgb24")
            vf.pts = i
            out.mux(vs.encode(vf))
            until = (i + 1) * 48000 // FPS
            while samples < until:
                n = min(1024, until - samples)
                t = (samples + np.arange(n, dtype=np.float32)) / 48000
                pcm = np.stack([0.2 * np.sin(2 * np.pi * 440 * t)] * 2).astype(np.float32)
                af = av.AudioFrame.from_ndarray(pcm, format="fltp", layout="stereo")
                af.sample_rate, af.pts = 48000, samples
                out.mux(aus.encode(af))
                samples += n
        out.mux(vs.encode(None))
        out.mux(aus.encode(None))


def plain(src: Path, dst: Path) -> int:
    """Decode -> rgb24 -> libx264 (crf 18, veryfast), nothing else: the ceiling."""
    n = 0
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        stream = inp.streams.video[0]
        stream.thread_type = "AUTO"
        vs = out.add_stream("libx264", rate=stream.average_rate, options={"crf": "18", "preset": "veryfast"})
        vs.width, vs.height, vs.pix_fmt = stream.width, stream.height, "yuv420p"
        for frame in inp.decode(stream):
            vf = av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), format="rgb24")
            vf.pts = n
            out.mux(vs.encode(vf))
            n += 1
        out.mux(vs.encode(None))
    return n


def timed(fn) -> dict:
    load = os.getloadavg()[0]
    wall, cpu = time.perf_counter(), cpu_s()
    frames = fn()
    wall, cpu = time.perf_counter() - wall, cpu_s() - cpu
    return {"frames": frames, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "fps": round(frames / wall, 2),
            "cpu_ms_per_frame": round(1000 * cpu / frames, 1), "load_before": round(load, 2)}


def degrade_variants(clean: Path, work: Path, presets: list[str], repeats: int) -> dict:
    from vividcli.quality.degrade import DegradeConfig, degrade_video

    def run(structural: str) -> int:
        out = work / f"deg_{structural}.mp4"
        config = DegradeConfig.from_options(input=clean, output=out, structural=structural, photometric="none",
                                            seed=1, overwrite=True)
        return degrade_video(config)["frames"]

    variants = {"plain": lambda: plain(clean, work / "plain.mp4"), "identity": lambda: run("none")}
    variants.update({p: (lambda p=p: run(p)) for p in presets})
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    for r in range(repeats):
        for name, fn in variants.items():
            runs[name].append(timed(fn))
            print(f"degrade {name} run {r + 1}: {runs[name][-1]}", flush=True)
    return runs


def eval_variants(clean: Path, degraded: Path, repeats: int) -> dict:
    import skimage.metrics  # noqa: F401  (SciPy's import, ~4 s once, is start-up, not throughput)

    from vividcli.media.reader import open_source
    from vividcli.quality.evaluate import EvalConfig, evaluate
    from vividcli.quality.streams import prefetch

    def decode_only() -> int:
        a, b = (prefetch(open_source(p).frames()) for p in (degraded, clean))
        return sum(1 for _ in zip(a, b))

    def measure() -> int:
        return evaluate(EvalConfig.from_options(output=degraded, ref=clean)).summary["frames"]

    runs: dict[str, list[dict]] = {"decode_two": [], "eval": []}
    for r in range(repeats):
        for name, fn in (("decode_two", decode_only), ("eval", measure)):
            runs[name].append(timed(fn))
            print(f"eval {name} run {r + 1}: {runs[name][-1]}", flush=True)
    return runs


def _status_kib(pid: int, key: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def child_rss(argv: list[str]) -> dict:
    """Run argv; its peak RSS is VmHWM polled from /proc every 0.1 s (monotonic; reset by exec).

    Not ru_maxrss from wait4: the child is forked from this process, which holds hundreds of MiB
    after the throughput runs, and ru_maxrss counts that pre-exec image (every child then "peaks"
    at this process's size)."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak, samples = 0, []
    marker = "\0".join(argv[-3:]).encode()  # present in /proc/PID/cmdline only after exec
    while proc.poll() is None:
        try:
            with open(f"/proc/{proc.pid}/cmdline", "rb") as f:
                execed = marker in f.read()
        except OSError:
            execed = False
        if execed:
            hwm, rss = _status_kib(proc.pid, "VmHWM"), _status_kib(proc.pid, "VmRSS")
            peak = max(peak, hwm or 0)
            if rss:
                samples.append(rss)
        time.sleep(0.1)
    err = proc.stderr.read().decode(errors="replace")[-300:] if proc.stderr else ""
    timeline = [round(samples[int(q * (len(samples) - 1))] / 1024) for q in (0.1, 0.25, 0.5, 0.75, 1.0)] \
        if samples else []
    return {"peak_rss_mib": round(peak / 1024, 1), "vmrss_mib_at_10_25_50_75_100pct": timeline,
            "wall_s": round(time.perf_counter() - started, 1), "exit": proc.returncode,
            **({"stderr": err} if proc.returncode else {})}


def rss_against_length(work: Path, width: int, height: int, lengths: list[int], preset: str) -> dict:
    exe = Path(sys.executable).with_name("vividvr")
    head = [str(exe)] if exe.exists() else [sys.executable, "-m", "vividcli"]
    out = {}
    for n in lengths:
        clean, deg = work / f"rss_clean_{n}.mp4", work / f"rss_deg_{n}.mp4"
        make_clip(clean, n, width, height)
        degrade = child_rss(head + ["degrade", str(clean), "-o", str(deg), "--preset", preset, "--quiet",
                                    "--overwrite"])
        evaluate = child_rss(head + ["eval", str(deg), "--ref", str(clean), "--quiet"])
        out[str(n)] = {"degrade": degrade, "eval": evaluate}
        print(f"rss {n} frames: {out[str(n)]}", flush=True)
    return out


def medians(runs: dict) -> dict:
    return {name: {"fps_median": statistics.median(r["fps"] for r in rs),
                   "fps_best": max(r["fps"] for r in rs),
                   "cpu_ms_per_frame_median": statistics.median(r["cpu_ms_per_frame"] for r in rs)}
            for name, rs in runs.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--frames", type=int, default=240)
    ap.add_argument("--rss-frames", type=int, nargs="*", default=[120, 480])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--presets", nargs="+", default=["medium", "strong"])
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "quality_throughput.json")
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    width = round(args.height * 16 / 9 / 2) * 2
    work = args.workdir or Path(tempfile.mkdtemp(prefix="vividvr-quality-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    result = {"started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
              "provenance": provenance(), "size": f"{width}x{args.height}", "frames": args.frames,
              "load_start": [round(x, 2) for x in os.getloadavg()]}
    try:
        clean = work / "clean.mp4"
        make_clip(clean, args.frames, width, args.height)
        result["degrade"] = degrade_variants(clean, work, args.presets, args.repeats)
        result["eval"] = eval_variants(clean, work / f"deg_{args.presets[0]}.mp4", args.repeats)
        result["summary"] = {"degrade": medians(result["degrade"]), "eval": medians(result["eval"])}
        result["rss"] = rss_against_length(work, width, args.height, args.rss_frames, args.presets[0])
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    result["load_end"] = [round(x, 2) for x in os.getloadavg()]
    result["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["summary"], indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
