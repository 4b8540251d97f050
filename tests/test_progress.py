"""Progress for people (rich bars with rate and ETA) and for logs (plain lines), on a real batch."""

from __future__ import annotations

import io

from rich.console import Console

from vividcli.engines.classic import ClassicEngine
from vividcli.progress import LogReporter, RichReporter
from vividcli.runner import EncodeOptions, Job, run_batch, summary_line
from vividcli.testing.media import make_av_mp4


def run_two(tmp_path, reporter):
    jobs = [Job(make_av_mp4(tmp_path / f"{n}.mp4", num_frames=4), tmp_path / "out" / f"{n}.mp4") for n in "ab"]
    results = run_batch(jobs, lambda source, interrupt: ClassicEngine(scale=1), EncodeOptions(), reporter=reporter)
    reporter.message(summary_line(results))
    reporter.close()
    return results


def test_log_lines_end_each_stage_at_100_percent_and_the_summary_stands_alone(tmp_path):
    stream = io.StringIO()
    results = run_two(tmp_path, LogReporter(stream, every_s=3600))
    lines = stream.getvalue().splitlines()
    assert [r.status for r in results] == ["done", "done"]
    assert any(line.startswith("[2/2] b.mp4: restore 4/4 (100%),") and "frames/s" in line for line in lines), lines
    assert lines[-1] == "2 done"


def test_rich_bars_show_rate_and_eta(tmp_path):
    from types import SimpleNamespace

    from vividcli.progress import RateColumn

    console = Console(file=io.StringIO(), force_terminal=True, width=160, record=True)
    reporter = RichReporter(console)
    columns = {type(c).__name__ for c in reporter.bars.columns}
    assert {"RateColumn", "TimeRemainingColumn", "MofNCompleteColumn"} <= columns
    reporter.stage("decode", 10)
    assert reporter.bars.tasks[-1].fields["stage"] == "decode"
    rendered = RateColumn().render(SimpleNamespace(speed=2.5, fields={"stage": "decode"}))
    assert rendered.plain == "2.50 frames/s"
    run_two(tmp_path, reporter)
    text = console.export_text()
    assert "[2/2] b.mp4" in text and "done: " in text and "2 done" in text


def test_ctrl_c_on_an_engine_without_cache_says_so_and_leaves_no_output(tmp_path):
    import signal

    import pytest

    from vividcli.interrupt import Interrupted

    class SelfInterrupting(ClassicEngine):
        def restore(self, source, progress=None):
            for i, frame in enumerate(super().restore(source, progress)):
                if i == 1:
                    signal.raise_signal(signal.SIGINT)  # the user's Ctrl-C, in the middle of the video
                yield frame

    stream = io.StringIO()
    job = Job(make_av_mp4(tmp_path / "a.mp4", num_frames=4), tmp_path / "out.mp4")
    with pytest.raises(Interrupted) as info:
        run_batch([job, job], lambda s, i: SelfInterrupting(scale=1), EncodeOptions(), reporter=LogReporter(stream))
    assert info.value.exit_code == 130
    assert "classic keeps no cache, so this output was not written" in str(info.value)
    assert "stopping at the next safe point" in stream.getvalue()
    assert list(tmp_path.iterdir()) == [tmp_path / "a.mp4"]
