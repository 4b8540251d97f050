"""Child processes for tests/test_resume.py: `vividvr` runs forked from a warm server.

Importing torch, diffusers and the model code takes 15-60 s on a loaded 2-core machine, far longer
than a whole tiny restoration, and the resume tests start about a dozen runs. So they start them
with multiprocessing's "forkserver": one server process imports `PRELOAD` once and forks a fresh
child for each run. Each child runs the real command line (`vividcli.cli.main()` with `sys.argv`)
and is killed or signalled by pid like any process; only the start-up differs from
`python -m vividcli` (the reference run of the tests is such a real subprocess, and the resumed
outputs must equal it bit for bit).

This module itself is light (it is pickled by reference into the children); the heavy imports
happen in the server through `PRELOAD`.
"""

from __future__ import annotations

import os
import sys

# Everything `vividvr restore --engine vivid` imports, so a forked child starts at once.
PRELOAD = [
    "vividcli.testing.resume_child",
    "torch",
    "diffusers",
    "vividcli.cli",
    "vividcli.commands.restore",
    "vividcli.runner",
    "vividcli.hub",
    "vividcli.engines.vivid",
    "vividcli.engines.classic",
    "vividcli.media.reader",
    "vividcli.media.writer",
    "vividcli.testing.checkpoints",
]


def _redirect_output(log_path: str) -> None:
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


# Printed (to the run's log) on every call of the VAE encoder or the T5 text encoder.
ENCODER_SPY_LINE = "[resume_child] encoder call: "


def _spy_on_encoders() -> None:
    """Log each VAE encode and T5 forward, so a test can tell whether a run encoded anything.

    Patched on the classes, inside this forked child only; the calls themselves are unchanged.
    """
    from diffusers import AutoencoderKLCogVideoX
    from transformers import T5EncoderModel

    def spied(cls, method: str, label: str) -> None:
        original = getattr(cls, method)

        def call(*args, **kwargs):
            sys.stderr.write(f"{ENCODER_SPY_LINE}{label}\n")
            sys.stderr.flush()
            return original(*args, **kwargs)

        setattr(cls, method, call)

    spied(AutoencoderKLCogVideoX, "encode", "vae.encode")
    spied(T5EncoderModel, "forward", "text_encoder")


def run_cli(argv: list[str], log_path: str, fault: str | None = None) -> None:
    """`vividvr *argv` with stdout and stderr going to `log_path`; exits with the command's code.

    Every VAE encode and T5 call is logged (`ENCODER_SPY_LINE`). `fault="exit-before-commit"`
    makes the process die (os._exit(99), like a SIGKILL: no cleanup) at the instant the finished
    output would be renamed into place.
    """
    _redirect_output(log_path)
    _spy_on_encoders()
    if fault == "exit-before-commit":
        import vividcli.media.writer as writer

        def die(*args, **kwargs):
            sys.stderr.flush()
            os._exit(99)

        writer.commit_dir = die
        writer.commit_file = die  # video outputs, should a test use one
    elif fault is not None:
        raise ValueError(f"unknown fault {fault!r}")
    from vividcli.cli import main

    sys.argv = ["vividvr", *argv]
    try:
        main()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


def write_checkpoint(root: str) -> None:
    """A tiny random checkpoint (the factory's smallest spec that still exercises every part)."""
    from vividcli.testing.checkpoints import write_tiny_checkpoint

    write_tiny_checkpoint(root, tiny_spec())


def tiny_spec():
    from vividcli.testing.checkpoints import TinySpec

    # One DiT layer (the ControlNet needs at least one, and so one in the transformer), a one-layer
    # T5 and 8-channel VAE blocks: about 1.5x faster per step than the default spec.
    return TinySpec(num_layers=1, controlnet_layers=1, t5_num_layers=1, vae_block_out_channels=(8, 8, 8, 8))
