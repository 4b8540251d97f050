"""`vividvr restore` as users run it: real media files, the real CLI (Typer runner and subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vividcli.cli import app
from vividcli.errors import UsageError
from vividcli.media.probe import probe
from vividcli.runner import plan_jobs
from vividcli.testing.media import make_av_mp4, make_ntsc, make_odd, make_png_sequence, make_text, truncate

runner = CliRunner()


def restore(*args: str):
    return runner.invoke(app, ["restore", *args])


def test_single_video_keeps_frames_rate_duration_and_audio(tmp_path):
    src = make_av_mp4(tmp_path / "in.mp4", num_frames=12)
    out = tmp_path / "out.mp4"
    result = restore(str(src), "-o", str(out), "--engine", "classic", "--upscale", "2", "--quiet")
    assert result.exit_code == 0, result.output
    a, b = probe(src), probe(out)
    assert b.num_frames == a.num_frames and b.fps == a.fps and b.duration == a.duration
    assert (b.width, b.height) == (2 * a.width, 2 * a.height)
    assert [s.type for s in b.streams if s.type == "audio"] == ["audio"]
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]


def test_ntsc_rate_is_exact(tmp_path):
    src = make_ntsc(tmp_path / "ntsc.mp4")
    out = tmp_path / "out.mkv"
    assert restore(str(src), "-o", str(out), "--engine", "classic", "--upscale", "1", "-q").exit_code == 0
    assert probe(out).fps == Fraction(30000, 1001) == probe(src).fps


def test_odd_size_and_png_sequence_output(tmp_path):
    src = make_odd(tmp_path / "odd.mp4")
    out = tmp_path / "frames"
    assert restore(str(src), "-o", str(out), "--engine", "classic", "--upscale", "1", "-q").exit_code == 0
    info = probe(src)
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == info.num_frames
    assert probe(out).width == info.width and probe(out).height == info.height


def test_existing_output_is_skipped_then_redone_with_overwrite(tmp_path):
    src = make_av_mp4(tmp_path / "in.mp4", num_frames=4)
    out = tmp_path / "out.mp4"
    out.write_bytes(b"keep me")
    result = restore(str(src), "-o", str(out), "--engine", "classic", "--upscale", "1")
    assert result.exit_code == 0 and "skipped" in result.output
    assert out.read_bytes() == b"keep me"
    result = restore(str(src), "-o", str(out), "--engine", "classic", "--upscale", "1", "--overwrite", "-q")
    assert result.exit_code == 0 and probe(out).num_frames == 4


def test_batch_goes_on_after_a_bad_file_and_reports_json(tmp_path):
    folder = tmp_path / "clips"
    folder.mkdir()
    make_av_mp4(folder / "a.mp4", num_frames=3)
    truncate(make_av_mp4(tmp_path / "whole.mp4", num_frames=24), folder / "b.mp4")
    make_png_sequence(folder / "seq", num_frames=3, mode="RGB")
    result = restore(str(folder), "-o", str(tmp_path / "out"), "--engine", "classic", "--upscale", "1",
                     "--json", "-q")
    assert result.exit_code == 1
    report = json.loads(result.stdout[result.stdout.index("{"):])
    by_name = {Path(r["input"]).name: r for r in report["results"]}
    assert by_name["a.mp4"]["status"] == "done" and by_name["a.mp4"]["frames"] == 3
    assert by_name["b.mp4"]["status"] == "failed" and by_name["b.mp4"]["error"]
    assert (tmp_path / "out" / "a.mp4").is_file()
    assert not (tmp_path / "out" / "b.mp4").exists()


@pytest.mark.parametrize(
    "args,needle",
    [
        (["missing.mp4"], "does not exist"),
        (["IN", "--clip-frames", "20"], "8k+1"),
        (["IN", "--engine", "magic"], "--engine"),
        (["IN", "--device", "cuda"], "CUDA"),
        (["IN", "--caption", "x", "--captions-file", "c.json"], "either"),
    ],
)
def test_usage_errors_are_one_line_with_exit_code_2(tmp_path, args, needle):
    src = make_av_mp4(tmp_path / "in.mp4", num_frames=2)
    args = [str(src) if a == "IN" else a for a in args]
    result = restore(*args, "-o", str(tmp_path / "out.mp4"))
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in result.output


def test_not_a_video_fails_with_exit_1_and_no_output(tmp_path):
    src = make_text(tmp_path / "notes.mp4")
    result = restore(str(src), "-o", str(tmp_path / "out.mp4"), "--engine", "classic")
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert not (tmp_path / "out.mp4").exists()


def test_output_equal_to_input_is_refused(tmp_path):
    src = make_av_mp4(tmp_path / "in.mp4", num_frames=2)
    result = restore(str(src), "-o", str(src), "--engine", "classic", "--overwrite")
    assert result.exit_code != 0 and "input itself" in result.output


def test_plan_jobs_mirrors_names(tmp_path):
    (tmp_path / "in" / "sub").mkdir(parents=True)
    for name in ("in/a.mp4", "in/sub/b.mov"):
        (tmp_path / name).write_bytes(b"x")
    jobs = plan_jobs([tmp_path / "in"], tmp_path / "out", recursive=True)
    assert [(j.input.name, j.output.relative_to(tmp_path)) for j in jobs] == [
        ("a.mp4", Path("out/a.mp4")), ("b.mov", Path("out/sub/b.mov"))]
    single = plan_jobs([tmp_path / "in" / "a.mp4"], tmp_path / "x.mkv")
    assert single[0].output == tmp_path / "x.mkv"


def test_subprocess_plain_log_lines_and_version(tmp_path):
    src = make_av_mp4(tmp_path / "in.mp4", num_frames=3)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    done = subprocess.run([sys.executable, "-m", "vividcli", "restore", str(src), "-o", str(tmp_path / "o.mp4"),
                           "--engine", "classic", "--upscale", "1"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert "[1/1] in.mp4: done" in done.stderr and "\x1b[" not in done.stderr
    version = subprocess.run([sys.executable, "-m", "vividcli", "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("vividvr ")


def test_missing_checkpoints_fail_before_any_work_with_the_fix(tmp_path):
    src = make_av_mp4(tmp_path / "in.mp4", num_frames=2)
    result = restore(str(src), "-o", str(tmp_path / "out.mp4"), "--ckpt-dir", str(tmp_path / "nope"),
                     "--device", "cpu")
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "vividvr models download" in lines[0] and "csbhr/Vivid-VR" in lines[0]
    assert not (tmp_path / "out.mp4").exists()


def test_partial_outputs_of_dead_runs_are_removed(tmp_path):
    src = make_av_mp4(tmp_path / "in.mp4", num_frames=2)
    dead = tmp_path / ".out.partial-999999999.mp4"  # no such pid
    dead.write_bytes(b"half a video")
    alive = tmp_path / f".out.partial-{os.getppid()}.mp4"  # another live process may still be writing it
    alive.write_bytes(b"in progress")
    result = restore(str(src), "-o", str(tmp_path / "out.mp4"), "--engine", "classic", "--upscale", "1", "-q")
    assert result.exit_code == 0
    assert not dead.exists() and alive.exists() and (tmp_path / "out.mp4").is_file()


@pytest.mark.parametrize("content, needle", [
    (None, "is a folder"),
    (b"\xff\xfe[[", "not UTF-8"),
    (b'{"clip": "a"}', "expected a list"),
    (b'[["a", 3]]', "must be a string"),
])
def test_captions_file_problems_stop_before_any_work(tmp_path, content, needle):
    src = make_av_mp4(tmp_path / "in.mp4", num_frames=2)
    captions = tmp_path / "captions.json"
    captions.mkdir() if content is None else captions.write_bytes(content)
    result = restore(str(src), "-o", str(tmp_path / "out.mp4"), "--captions-file", str(captions),
                     "--ckpt-dir", str(tmp_path / "no-checkpoints"))
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], result.output


def test_an_unexpected_failure_is_one_line_and_the_batch_goes_on(tmp_path, monkeypatch):
    from vividcli.engines.classic import ClassicEngine

    original = ClassicEngine.restore

    def flaky(self, source, progress=None):
        if "bad" in str(source.info.path):
            raise ValueError("something nobody foresaw\nsecond line")
        yield from original(self, source, progress)

    monkeypatch.setattr(ClassicEngine, "restore", flaky)
    folder = tmp_path / "in"
    folder.mkdir()
    make_av_mp4(folder / "bad.mp4", num_frames=2)
    make_av_mp4(folder / "good.mp4", num_frames=2)
    result = restore(str(folder), "-o", str(tmp_path / "out"), "--engine", "classic", "--upscale", "1")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "unexpected ValueError: something nobody foresaw (please report it" in result.output
    assert "second line" not in result.output and (tmp_path / "out" / "good.mp4").is_file()
    result = restore(str(folder / "bad.mp4"), "-o", str(tmp_path / "o.mp4"), "--engine", "classic", "--debug")
    assert result.exit_code == 1 and "Traceback" in result.output and "second line" in result.output


def test_shell_loop_into_a_new_folder_with_a_trailing_slash(tmp_path, monkeypatch):
    """README: `for f in *.mp4; do vividvr restore "$f" -o restored/; done` (restored/ does not exist yet)."""
    monkeypatch.chdir(tmp_path)
    for name in ("a.mp4", "b.mp4"):
        make_av_mp4(tmp_path / name, num_frames=2)
        result = restore(name, "-o", "restored/", "--engine", "classic", "--upscale", "1", "-q")
        assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "restored").iterdir()) == ["a.mp4", "b.mp4"]


def test_plan_jobs_folder_rules(tmp_path):
    (tmp_path / "in").mkdir()
    for name in ("a.mp4", "b.mov"):
        (tmp_path / "in" / name).write_bytes(b"x")
    a = tmp_path / "in" / "a.mp4"
    assert plan_jobs([a], f"{tmp_path / 'new'}/")[0].output == tmp_path / "new" / "a.mp4"
    jobs = plan_jobs([tmp_path / "in"], tmp_path / "out", save_frames=tmp_path / "pngs")
    assert [j.save_frames for j in jobs] == [tmp_path / "pngs" / "a", tmp_path / "pngs" / "b"]
    assert plan_jobs([a], tmp_path / "o.mp4", save_frames=tmp_path / "pngs")[0].save_frames == tmp_path / "pngs"
    with pytest.raises(UsageError, match="named like a video file"):
        plan_jobs([tmp_path / "in"], tmp_path / "two.mp4")
    with pytest.raises(UsageError, match="--codec png writes a folder"):
        plan_jobs([a], tmp_path / "x.mp4", codec="png")


def test_save_frames_with_several_inputs_gives_each_its_folder(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    make_av_mp4(folder / "a.mp4", num_frames=3)
    make_av_mp4(folder / "b.mp4", num_frames=2)
    result = restore(str(folder), "-o", str(tmp_path / "out"), "--save-frames", str(tmp_path / "pngs"),
                     "--engine", "classic", "--upscale", "1", "-q")
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "pngs" / "a").glob("*.png"))) == 3
    assert len(list((tmp_path / "pngs" / "b").glob("*.png"))) == 2


@pytest.mark.parametrize("args, needle", [
    (["--codec", "h263xx"], "unsupported codec 'h263xx': choose one of libx264, libx265, prores, ffv1"),
    (["--preset", "turbo"], "--preset must be one of"),
    (["--crf", "99"], "--crf must be from 0"),
    (["--codec", "prores"], "prores_ks cannot be stored in .mp4"),
    (["--codec", "ffv1", "--crf", "10"], "do not apply to ffv1"),
    (["--pix-fmt", "nv99"], "cannot encode pix_fmt nv99"),
    (["-o", "OUT.avi"], "cannot write .avi videos"),
    (["-o", "OUT_frames", "--crf", "20"], "--crf apply to video outputs"),
    (["-o", "OUT_frames", "--save-frames", "pngs"], "--save-frames apply to video outputs"),
])
def test_encoder_options_are_checked_before_any_work(tmp_path, args, needle):
    src = make_av_mp4(tmp_path / "in.mp4", num_frames=2)
    out = ["-o", str(tmp_path / "out.mp4")] if "-o" not in args else []
    args = [a.replace("OUT", str(tmp_path / "out")) for a in args]
    result = restore(str(src), *out, *args, "--engine", "classic")
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], result.output


def test_output_that_is_a_hard_link_of_the_input_is_refused(tmp_path):
    src = make_av_mp4(tmp_path / "in.mp4", num_frames=2)
    os.link(src, tmp_path / "link.mp4")
    for extra in ([], ["--overwrite"]):  # refused, not "skipped because it exists"
        result = restore(str(src), "-o", str(tmp_path / "link.mp4"), "--engine", "classic", *extra)
        assert result.exit_code == 1 and "is the input itself" in result.output
    assert (tmp_path / "link.mp4").read_bytes() == src.read_bytes()


def test_a_device_as_input_is_one_line(tmp_path):
    result = restore("/dev/null", "-o", str(tmp_path / "out.mp4"), "--engine", "classic")
    assert result.exit_code == 1 and "Traceback" not in result.output and "unexpected" not in result.output
    assert "/dev/null" in result.output


def test_json_report_is_printed_even_for_a_usage_error(tmp_path):
    result = runner.invoke(app, ["restore", str(tmp_path / "nope.mp4"), "-o", str(tmp_path / "o.mp4"), "--json"])
    assert result.exit_code == 2
    report = json.loads(result.stdout)
    assert report["results"] == [] and report["exit_code"] == 2 and "does not exist" in report["error"]


def test_fps_on_a_video_keeps_its_rate_and_says_so(tmp_path):
    src = make_av_mp4(tmp_path / "in.mp4", num_frames=3)
    result = restore(str(src), "-o", str(tmp_path / "o.mp4"), "--engine", "classic", "--upscale", "1", "--fps", "30")
    assert result.exit_code == 0 and "--fps is for image sequences" in result.output
    assert probe(tmp_path / "o.mp4").fps == probe(src).fps


@pytest.mark.parametrize("out_name, args, codec, audio", [
    ("o.mkv", ["--codec", "libx265", "--crf", "30", "--preset", "ultrafast"], "hevc", True),
    ("o.mov", ["--codec", "prores"], "prores", True),
    ("o.mkv", ["--codec", "ffv1", "--no-audio"], "ffv1", False),
    ("o.mp4", ["--pix-fmt", "yuv444p"], "h264", True),
])
def test_codec_options_through_the_cli(tmp_path, out_name, args, codec, audio):
    src = make_av_mp4(tmp_path / "in.mp4", num_frames=3)
    out = tmp_path / out_name
    result = restore(str(src), "-o", str(out), "--engine", "classic", "--upscale", "1", "-q", *args)
    assert result.exit_code == 0, result.output
    info = probe(out)
    assert info.codec == codec and info.num_frames == 3 and info.fps == probe(src).fps
    assert any(s.type == "audio" for s in info.streams) == audio
    if "--pix-fmt" in args:
        assert info.pix_fmt == "yuv444p"


def test_recursive_batch_mirrors_subfolders_and_image_sequences(tmp_path):
    (tmp_path / "in" / "deep" / "er").mkdir(parents=True)
    make_av_mp4(tmp_path / "in" / "top.mp4", num_frames=2)
    make_av_mp4(tmp_path / "in" / "deep" / "er" / "low.mov", num_frames=2)
    make_png_sequence(tmp_path / "in" / "deep" / "seq", num_frames=3, mode="RGB")
    flat = restore(str(tmp_path / "in"), "-o", str(tmp_path / "flat"), "--engine", "classic", "--upscale", "1", "-q")
    assert flat.exit_code == 0 and sorted(p.name for p in (tmp_path / "flat").iterdir()) == ["top.mp4"]
    result = restore(str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--recursive", "--engine", "classic",
                     "--upscale", "1", "-q")
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    assert (out / "top.mp4").is_file() and (out / "deep" / "er" / "low.mov").is_file()
    assert len(list((out / "deep" / "seq").glob("*.png"))) == 3
