"""GracefulInterrupt: first SIGINT/SIGTERM -> flag and a clean exit at the next safe point."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from vividcli.errors import VividError
from vividcli.interrupt import GracefulInterrupt, Interrupted, exit_code_for

# The child mimics the CLI: a loop with safe points, VividError -> one line + its exit code.
CHILD = textwrap.dedent("""
    import sys, time
    from vividcli.interrupt import GracefulInterrupt
    from vividcli.errors import VividError

    def main(check):
        with GracefulInterrupt() as stop:
            print("ready", flush=True)
            announced = False
            while True:
                time.sleep(0.005)  # a "step"
                if stop.requested and not announced:
                    print("safe-point", stop.signum, flush=True)
                    announced = True
                if check:
                    stop.check()

    try:
        main(check=sys.argv[1] == "check")
    except VividError as e:
        print(e, file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        print("aborted", flush=True)
        sys.exit(130)
""")


def _start(mode: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", CHILD, mode], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX signal delivery")


@posix_only
@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_first_signal_stops_at_safe_point(signum: int, code: int) -> None:
    proc = _start("check")
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == code
    assert out.split() == ["safe-point", str(int(signum))]
    assert "run the same command again to resume" in err
    assert len(err.strip().splitlines()) == 1  # one line, no traceback


@posix_only
def test_second_sigint_aborts_immediately() -> None:
    proc = _start("nocheck")  # a loop that never reaches a safe point that stops it
    assert proc.stdout is not None
    proc.send_signal(signal.SIGINT)
    assert proc.stdout.readline().split() == ["safe-point", str(int(signal.SIGINT))]
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 130
    assert out.strip() == "aborted"


def test_in_process_flag_and_handler_restore() -> None:
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    seen: list[int] = []
    with GracefulInterrupt(on_request=seen.append) as stop:
        assert not stop.requested and stop.exit_code is None
        stop.check()  # nothing requested: no-op
        signal.raise_signal(signal.SIGTERM)
        assert stop.requested and stop.signum == signal.SIGTERM and stop.exit_code == 143
        signal.raise_signal(signal.SIGTERM)  # a second SIGTERM is ignored
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)  # a second signal that is SIGINT aborts
        with pytest.raises(Interrupted) as info:
            stop.check()
    assert seen == [signal.SIGTERM]
    assert info.value.exit_code == 143 and isinstance(info.value, VividError)
    assert {s: signal.getsignal(s) for s in before} == before


def test_interrupted_error() -> None:
    e = Interrupted(signal.SIGINT)
    assert e.exit_code == exit_code_for(signal.SIGINT) == 130
    assert str(e) == ("interrupted by Ctrl-C (SIGINT); the work done so far is cached: "
                      "run the same command again to resume")
    assert Interrupted(signal.SIGTERM, "custom").args == ("custom",)
