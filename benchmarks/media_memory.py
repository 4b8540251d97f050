"""Media path benchmark: peak RSS against video length, and classic-path throughput vs plain PyAV.

Reports numbers; it asserts nothing (the exit status is 0 unless something crashed).

1. Peak RSS against length. Synthetic clips (default 1280x720, 24 fps, H.264 yuv420p made with
   libx264 preset "fast" crf 23, plus a 48 kHz stereo AAC track; frames are generated and encoded
   one at a time, nothing is held) of 300 and 1200 frames are restored by the real command line,

       vividvr restore IN -o OUT --engine classic --upscale 1 --quiet --overwrite

   each in a fresh child process. The child's peak RSS is `ru_maxrss` from `os.wait4(pid)`, i.e.
   the kernel's high-water mark of that one process (not of the benchmark nor of earlier runs).
   While it runs, /proc/<pid>/status (VmRSS) is sampled every 0.2 s for a timeline, reported as
   RSS at 10 %, 25 %, 50 %, 75 % and 100 % of the run's wall time. The goal from the issue: peak RSS
   at 1200 frames within 20 % of the peak at 300 frames.

2. Throughput, in this process, on the 300-frame clip, alternating (to share the host's load
   swings fairly) `--repeats` times:
     * plain:    PyAV decode (thread_type AUTO, like our reader) -> `to_ndarray("rgb24")` ->
                 `VideoFrame.from_ndarray` -> libx264 with our writer's defaults (crf 18, preset
                 medium, yuv420p, same size), .mp4, video only;
     * identity: our reader + writer with an engine that passes frames through (float32 RGB
                 conversion with accurate swscale flags, quantise, BT.709 tags, AAC copied):
                 the media layer's own cost;
     * classic:  `vividcli.runner.write_job` with `ClassicEngine(scale=1)`, exactly what
                 `vividvr restore --engine classic --upscale 1` runs after start-up.
   fps = frames / wall seconds; CPU seconds (this process, all threads) are reported too, since on a
   shared host they move less than wall time. Thread settings: OMP/MKL/OPENBLAS = --threads,
   torch.set_num_threads(--threads); FFmpeg decoders and libx264 use their automatic thread
   counts in all three variants (our reader and writer do not set them).

Optional 3. `--rss-trace`: for each length, a child runs `write_job` directly and records VmRSS every
   100 frames (and, with `--tracemalloc`, the Python heap and its top growth sites), to see where
   memory grows if it does.

    .venv/bin/python benchmarks/media_memory.py [--height 720] [--frames 300 1200] [--repeats 2]
        [--rss-trace] [--json benchmarks/results/media_memory.json] [--workdir DIR] [--keep]
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
import threading
import time
from datetime import datetime, timezone
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FPS = 24
AUDIO_RATE = 48000


# ----------------------------------------------------------------------------- helpers


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def vm_rss_kib(pid: int | str = "self") -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def mib(kib: float) -> float:
    return round(kib / 1024, 1)


def machine() -> dict:
    mem_kib = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    import av
    import numpy as np

    return {"cpus": os.cpu_count(), "cpu_model": model, "mem_gib": round(mem_kib / 2**20, 1),
            "python": platform.python_version(), "platform": platform.platform(),
            "pyav": av.__version__, "libavcodec": ".".join(map(str, av.library_versions["libavcodec"])),
            "numpy": np.__version__}


MEDIA_PATH_FILES = ["src/vividcli/media", "src/vividcli/engines/classic.py", "src/vividcli/engines/base.py",
                    "src/vividcli/runner.py"]


def provenance() -> dict:
    """The commit, and whether the files on the measured path differ from it (others edit in parallel)."""
    def git(*a: str) -> str:
        try:
            return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    return {"git_head": git("rev-parse", "--short", "HEAD"),
            "media_path_uncommitted": git("status", "--short", "--", *MEDIA_PATH_FILES).splitlines()}


# ----------------------------------------------------------------------------- synthetic clip


def make_clip(path: Path, frames: int, width: int, height: int, seed: int = 7) -> dict:
    """A `frames`-long H.264 + AAC clip, generated and encoded frame by frame (nothing is held).

    Content: a fixed random texture panned diagonally (a crop window moving 2 px/frame), a bright
    square moving across, and mild grain cycled from 8 precomputed fields (so the denoiser has
    something to do and x264 sees real motion). Audio: a 440/660 Hz stereo tone for the whole length.
    """
    import av
    import numpy as np

    rng = np.random.default_rng(seed)
    pad = 2 * frames + 8
    # smooth-ish texture: low-res noise upsampled (cheap), plus a gradient
    small = rng.integers(0, 256, size=((height + pad) // 8 + 2, (width + pad) // 8 + 2, 3), dtype=np.uint8)
    tex = np.repeat(np.repeat(small, 8, axis=0), 8, axis=1)[: height + pad, : width + pad]
    grad = np.linspace(0, 60, width + pad, dtype=np.float32)[None, :, None]
    tex = np.clip(tex.astype(np.float32) * 0.6 + grad, 0, 255).astype(np.uint8)
    grain = [rng.integers(-3, 4, size=(height, width, 1), dtype=np.int16) for _ in range(8)]
    box = max(16, height // 6)

    tmp = path.with_name(path.name + ".partial.mp4")
    started = time.monotonic()
    with av.open(str(tmp), "w", format="mp4") as out:
        vs = out.add_stream("libx264", rate=FPS, options={"preset": "fast", "crf": "23"})
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.codec_context.time_base = Fraction(1, FPS)
        aus = out.add_stream("aac", rate=AUDIO_RATE, layout="stereo")
        aus.codec_context.time_base = Fraction(1, AUDIO_RATE)
        frame_size = 1024
        audio_pts = 0
        total_samples = frames * AUDIO_RATE // FPS
        for i in range(frames):
            off = 2 * i
            img = tex[off : off + height, off : off + width].astype(np.int16) + grain[i % 8]
            x = (i * 7) % max(1, width - box)
            y = (height - box) // 2
            img[y : y + box, x : x + box] = 230
            vf = av.VideoFrame.from_ndarray(np.clip(img, 0, 255).astype(np.uint8), format="rgb24")
            vf.pts = i
            out.mux(vs.encode(vf))
            # audio up to the end of this video frame
            until = min(total_samples, (i + 1) * AUDIO_RATE // FPS)
            while audio_pts < until:
                n = min(frame_size, total_samples - audio_pts)
                t = (audio_pts + np.arange(n, dtype=np.float32)) / AUDIO_RATE
                pcm = np.stack([0.2 * np.sin(2 * np.pi * 440 * t), 0.2 * np.sin(2 * np.pi * 660 * t)]).astype(np.float32)
                af = av.AudioFrame.from_ndarray(pcm, format="fltp", layout="stereo")
                af.sample_rate = AUDIO_RATE
                af.pts = audio_pts
                out.mux(aus.encode(af))
                audio_pts += n
        out.mux(vs.encode(None))
        out.mux(aus.encode(None))
    tmp.replace(path)
    return {"path": str(path), "frames": frames, "width": width, "height": height, "fps": FPS,
            "bytes": path.stat().st_size, "generate_s": round(time.monotonic() - started, 1)}


# ----------------------------------------------------------------------------- 1. peak RSS of the CLI


def cli_command(src: Path, dst: Path) -> list[str]:
    exe = Path(sys.executable).with_name("vividvr")
    head = [str(exe)] if exe.exists() else [sys.executable, "-m", "vividcli"]
    return head + ["restore", str(src), "-o", str(dst), "--engine", "classic", "--upscale", "1",
                   "--quiet", "--overwrite"]


def child_env(threads: int) -> dict:
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[k] = str(threads)
    return env


def measure_cli_rss(src: Path, dst: Path, threads: int, frames: int) -> dict:
    """Run the CLI in a fresh process; its own ru_maxrss (wait4) and a VmRSS timeline."""
    cmd = cli_command(src, dst)
    load_before = loadavg()
    err = tempfile.TemporaryFile()
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=child_env(threads))
    samples: list[tuple[float, int]] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            rss = vm_rss_kib(proc.pid)
            if rss is not None:
                samples.append((time.monotonic() - started, rss))
            stop.wait(0.2)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - started
    stop.set()
    poller.join()
    proc.returncode = os.waitstatus_to_exitcode(status)  # we reaped it; tell Popen
    err.seek(0)
    stderr = err.read().decode(errors="replace").strip()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {stderr[-2000:]}")

    def at(fraction: float) -> float | None:
        t = fraction * wall
        before = [rss for s, rss in samples if s <= t]
        return mib(before[-1]) if before else None

    return {
        "command": " ".join(cmd), "frames": frames, "wall_s": round(wall, 1),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "peak_rss_mib": mib(usage.ru_maxrss),  # Linux: KiB
        "polled_max_rss_mib": mib(max((r for _, r in samples), default=0)),
        "rss_timeline_mib": {f"{int(p * 100)}%": at(p) for p in (0.1, 0.25, 0.5, 0.75, 1.0)},
        "samples": len(samples), "load_before": load_before, "load_after": loadavg(),
        "stderr": stderr[-500:],
    }


# ----------------------------------------------------------------------------- 2. throughput in process


class IdentityEngine:
    """Passes frames through: our reader + writer with no restoration (the media layer's own cost)."""

    name = "identity"

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        return width, height

    def restore(self, source, progress=None):
        if progress is not None:
            progress.stage("restore", source.info.num_frames)
        for frame in source.frames():
            yield frame
            if progress is not None:
                progress.advance(1)


def run_ours(src: Path, dst: Path, engine_name: str) -> int:
    from vividcli.engines.classic import ClassicEngine
    from vividcli.media.reader import open_source
    from vividcli.planning.geometry import upscale_factor
    from vividcli.progress import QuietReporter
    from vividcli.runner import EncodeOptions, Job, write_job

    source = open_source(src)
    if engine_name == "classic":  # what engines.build.engine_factory builds for --upscale 1
        engine = ClassicEngine(scale=upscale_factor(source.height, source.width, 1.0))
    else:
        engine = IdentityEngine()
    return write_job(Job(src, dst), source, engine, EncodeOptions(), overwrite=True, progress=QuietReporter())


def run_plain(src: Path, dst: Path) -> int:
    """Plain PyAV: decode -> rgb24 ndarray -> libx264 (writer defaults: crf 18, medium, yuv420p)."""
    import av

    from vividcli.media.codecs import CODECS

    spec = CODECS["libx264"]
    n = 0
    with av.open(str(src)) as inp, av.open(str(dst), "w", format="mp4") as out:
        vin = inp.streams.video[0]
        vin.thread_type = "AUTO"
        rate = vin.average_rate
        vs = out.add_stream("libx264", rate=rate, options={"crf": str(spec["crf"]), "preset": str(spec["preset"])})
        vs.width, vs.height, vs.pix_fmt = vin.codec_context.width, vin.codec_context.height, spec["pix"][0]
        vs.codec_context.time_base = 1 / Fraction(rate)
        for frame in inp.decode(vin):
            arr = frame.to_ndarray(format="rgb24")
            vf = av.VideoFrame.from_ndarray(arr, format="rgb24")
            vf.pts = n
            out.mux(vs.encode(vf))
            n += 1
        out.mux(vs.encode(None))
    return n


def measure_throughput(src: Path, workdir: Path, repeats: int) -> dict:
    # import before timing, so the first variant does not pay for them
    import vividcli.engines.classic  # noqa: F401
    import vividcli.runner  # noqa: F401
    import vividcli.stages.resize  # noqa: F401

    variants = {"plain": lambda d: run_plain(src, d), "identity": lambda d: run_ours(src, d, "identity"),
                "classic": lambda d: run_ours(src, d, "classic")}
    runs: dict[str, list[dict]] = {k: [] for k in variants}
    for r in range(repeats):
        for name, fn in variants.items():
            dst = workdir / f"tp_{name}.mp4"
            load = loadavg()
            c0, t0 = cpu_s(), time.monotonic()
            frames = fn(dst)
            wall, cpu = time.monotonic() - t0, cpu_s() - c0
            runs[name].append({"repeat": r, "frames": frames, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
                               "fps": round(frames / wall, 2), "load_before": load})
            print(f"  throughput {name:<8} repeat {r}: {frames} frames, {wall:6.1f} s wall, "
                  f"{frames / wall:6.2f} fps, {cpu:6.1f} CPU-s, load {load}", flush=True)
            dst.unlink(missing_ok=True)
    summary = {}
    for name, rs in runs.items():
        summary[name] = {"fps_median": round(statistics.median(r["fps"] for r in rs), 2),
                         "fps_best": round(max(r["fps"] for r in rs), 2),
                         "cpu_s_per_frame_median": round(statistics.median(r["cpu_s"] / r["frames"] for r in rs), 4)}
    for name in ("identity", "classic"):
        summary[f"{name}_vs_plain_fps_ratio"] = round(summary[name]["fps_median"] / summary["plain"]["fps_median"], 3)
        summary[f"{name}_vs_plain_cpu_ratio"] = round(
            summary[name]["cpu_s_per_frame_median"] / summary["plain"]["cpu_s_per_frame_median"], 2)
    return {"runs": runs, "summary": summary}


# ----------------------------------------------------------------------------- 3. RSS trace (child)


def trace_child(src: Path, dst: Path, every: int, use_tracemalloc: bool) -> None:
    """Child mode: run write_job on the classic engine, print a JSON line of VmRSS every `every` frames."""
    import tracemalloc

    from vividcli.engines.classic import ClassicEngine
    from vividcli.media.reader import open_source
    from vividcli.progress import QuietReporter
    from vividcli.runner import EncodeOptions, Job, write_job

    if use_tracemalloc:
        tracemalloc.start(8)
    points = []
    snap0 = None

    class Sampler(ClassicEngine):
        def restore(self, source, progress=None):
            nonlocal snap0
            for i, frame in enumerate(super().restore(source, progress)):
                if i % every == 0:
                    p = {"frame": i, "rss_mib": mib(vm_rss_kib() or 0)}
                    if use_tracemalloc:
                        cur, peak = tracemalloc.get_traced_memory()
                        p.update(py_heap_mib=round(cur / 2**20, 1), py_heap_peak_mib=round(peak / 2**20, 1))
                        if i == every:
                            snap0 = tracemalloc.take_snapshot()
                    points.append(p)
                yield frame

    source = open_source(src)
    write_job(Job(src, dst), source, Sampler(scale=1.0), EncodeOptions(), overwrite=True, progress=QuietReporter())
    result: dict = {"points": points, "final_rss_mib": mib(vm_rss_kib() or 0)}
    if use_tracemalloc and snap0 is not None:
        diffs = tracemalloc.take_snapshot().compare_to(snap0, "traceback")
        growth = sorted(diffs, key=lambda s: s.size_diff, reverse=True)[:5]
        result["top_growth"] = [{"kib": round(s.size_diff / 1024, 1), "count": s.count_diff,
                                 "where": [str(f) for f in s.traceback.format()[-6:]]} for s in growth]
    print("TRACE " + json.dumps(result), flush=True)


def rss_trace(src: Path, dst: Path, threads: int, every: int, use_tracemalloc: bool) -> dict:
    cmd = [sys.executable, __file__, "--_trace-child", str(src), str(dst), "--trace-every", str(every)]
    if use_tracemalloc:
        cmd.append("--tracemalloc")
    out = subprocess.run(cmd, capture_output=True, text=True, env=child_env(threads), check=True).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("TRACE "))
    return json.loads(line[len("TRACE "):])


# ----------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--height", type=int, default=720, help="clip height; width is 16:9 (720 -> 1280)")
    ap.add_argument("--frames", type=int, nargs="+", default=[300, 1200], help="clip lengths for the RSS runs")
    ap.add_argument("--throughput-frames", type=int, default=300, help="clip length for the fps comparison")
    ap.add_argument("--repeats", type=int, default=2, help="alternating throughput repeats")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-rss", action="store_true")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--rss-trace", action="store_true", help="also record VmRSS every --trace-every frames")
    ap.add_argument("--trace-every", type=int, default=100)
    ap.add_argument("--tracemalloc", action="store_true", help="with --rss-trace: Python heap and growth sites")
    ap.add_argument("--workdir", type=Path, default=None, help="where clips go (default: a temp folder)")
    ap.add_argument("--keep", action="store_true", help="keep the clips and outputs")
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "media_memory.json")
    ap.add_argument("--_trace-child", nargs=2, type=Path, dest="trace_child", help=argparse.SUPPRESS)
    args = ap.parse_args()

    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[k] = str(args.threads)
    if args.trace_child:
        trace_child(*args.trace_child, every=args.trace_every, use_tracemalloc=args.tracemalloc)
        return

    import torch  # the CLI imports it too (vividcli.stages.resize); pin its pool the same way

    torch.set_num_threads(args.threads)
    height = args.height
    width = (height * 16 // 9 + 1) // 2 * 2
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="vividvr_media_bench_"))
    workdir.mkdir(parents=True, exist_ok=True)
    started = datetime.now(timezone.utc)
    result: dict = {
        "benchmark": "media_memory", "date_utc": started.isoformat(timespec="seconds"),
        "machine": machine(), "threads": args.threads, "torch_threads": torch.get_num_threads(),
        "size": f"{width}x{height}", "fps": FPS, "load_start": loadavg(),
        "notes": "shared host: other processes were running; loadavg recorded per run",
        "provenance_start": provenance(),
    }
    print(f"media_memory: {width}x{height}, workdir {workdir}, load {result['load_start']}", flush=True)

    clips: dict[int, Path] = {}
    lengths = sorted(set(([] if args.skip_rss else args.frames) + ([] if args.skip_throughput else [args.throughput_frames])))
    result["clips"] = []
    for n in lengths:
        path = workdir / f"clip_{height}p_{n}.mp4"
        if not path.exists():
            result["clips"].append(make_clip(path, n, width, height))
            print(f"  generated {path.name}: {result['clips'][-1]['bytes'] / 2**20:.1f} MiB in "
                  f"{result['clips'][-1]['generate_s']} s", flush=True)
        clips[n] = path

    try:
        if not args.skip_rss:
            rss = []
            for n in args.frames:
                r = measure_cli_rss(clips[n], workdir / f"out_{height}p_{n}.mp4", args.threads, n)
                rss.append(r)
                print(f"  rss {n:5d} frames: peak {r['peak_rss_mib']:7.1f} MiB, {r['wall_s']:6.1f} s wall "
                      f"({n / r['wall_s']:.2f} fps incl. start-up), timeline {r['rss_timeline_mib']}, "
                      f"load {r['load_before']} -> {r['load_after']}", flush=True)
            result["rss"] = {"runs": rss}
            if len(rss) >= 2:
                short, long = rss[0], rss[-1]
                ratio = long["peak_rss_mib"] / short["peak_rss_mib"]
                result["rss"].update(ratio_long_over_short=round(ratio, 3), goal="<= 1.20",
                                     meets_goal=bool(ratio <= 1.20))
            if args.rss_trace:
                result["rss_trace"] = {}
                for n in args.frames:
                    result["rss_trace"][str(n)] = t = rss_trace(clips[n], workdir / f"trace_{n}.mp4", args.threads,
                                                                args.trace_every, args.tracemalloc)
                    print(f"  trace {n}: " + ", ".join(f"{p['frame']}:{p['rss_mib']}" for p in t["points"]), flush=True)

        if not args.skip_throughput:
            print(f"  throughput on {args.throughput_frames} frames, {args.repeats} alternating repeats", flush=True)
            result["throughput"] = measure_throughput(clips[args.throughput_frames], workdir, args.repeats)
            result["throughput"]["frames"] = args.throughput_frames
    finally:
        result["load_end"] = loadavg()
        result["provenance_end"] = provenance()
        result["elapsed_s"] = round((datetime.now(timezone.utc) - started).total_seconds(), 1)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)

    print_table(result)
    print(f"results: {args.json}")


def print_table(result: dict) -> None:
    print()
    print(f"Media path, {result['size']} @ {result['fps']} fps, {result['machine']['cpus']} CPUs, "
          f"load {result['load_start']} -> {result['load_end']}")
    if "rss" in result:
        print(f"{'frames':>8} {'peak RSS MiB':>13} {'wall s':>8} {'CPU s':>8}")
        for r in result["rss"]["runs"]:
            print(f"{r['frames']:>8} {r['peak_rss_mib']:>13.1f} {r['wall_s']:>8.1f} {r['cpu_s']:>8.1f}")
        if "ratio_long_over_short" in result["rss"]:
            print(f"peak RSS ratio {result['rss']['runs'][-1]['frames']}/{result['rss']['runs'][0]['frames']}: "
                  f"{result['rss']['ratio_long_over_short']:.3f} (goal <= 1.20: "
                  f"{'met' if result['rss']['meets_goal'] else 'NOT met'})")
    if "throughput" in result:
        s = result["throughput"]["summary"]
        print(f"{'variant':>10} {'fps (median)':>13} {'fps (best)':>11} {'CPU s/frame':>12}")
        for name in ("plain", "identity", "classic"):
            print(f"{name:>10} {s[name]['fps_median']:>13.2f} {s[name]['fps_best']:>11.2f} "
                  f"{s[name]['cpu_s_per_frame_median']:>12.4f}")
        print(f"classic/plain fps {s['classic_vs_plain_fps_ratio']:.3f}, identity/plain fps "
              f"{s['identity_vs_plain_fps_ratio']:.3f}")


if __name__ == "__main__":
    main()
