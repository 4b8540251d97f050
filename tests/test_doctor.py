"""`vividvr doctor`: the environment report a bug report needs."""

from __future__ import annotations

from typer.testing import CliRunner

from vividcli.cli import app


def test_doctor_reports_versions_codecs_checkpoints_and_cache(tmp_path, reference_ckpt_dir, monkeypatch):
    monkeypatch.setenv("VIVIDVR_CACHE_DIR", str(tmp_path / "cache"))
    result = CliRunner().invoke(app, ["doctor", "--ckpt-dir", str(reference_ckpt_dir)])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "torch " in out and "diffusers " in out and "libx264" in out
    assert f"checkpoints: {reference_ckpt_dir} (complete layout" in out
    assert "textfix extra" in out and "text fix model: not found" in out
    assert "captioner: not found" in out and "--what captioner" in out
    assert f"cache: {tmp_path / 'cache'}" in out


def test_doctor_names_what_is_missing(tmp_path):
    (tmp_path / "ckpt" / "RealESRGAN").mkdir(parents=True)
    (tmp_path / "ckpt" / "RealESRGAN" / "RealESRGAN_x2plus.pth").write_bytes(b"x")
    result = CliRunner().invoke(app, ["doctor", "--ckpt-dir", str(tmp_path / "ckpt")])
    assert result.exit_code == 0
    assert "checkpoint incomplete" in result.output and "vividvr models download" in result.output
    assert f"text fix model: {tmp_path / 'ckpt' / 'RealESRGAN' / 'RealESRGAN_x2plus.pth'}" in result.output
