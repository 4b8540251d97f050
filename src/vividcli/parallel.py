"""Step-parallel restoration: the processes of one torchrun job share each denoising step.

A launcher (torchrun, srun, mpirun with the usual variables) starts one process per GPU and sets
RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT. Rank 0 (the leader) does everything a
single process does -- reading, captioning, encoding, the cache, decoding, writing -- and at each
denoising step the (clip, tile) model calls are dealt out over all ranks. The rest of vividcli sees
only `StepGroup`: who owns which call, the sum that exchanges the predictions, and the commands the
leader sends the others (a job follows, the next step, stop).

The others (workers) never touch a file: they hold the denoising models, take each job's
conditioning and state from the leader, and follow it step by step, so every rank holds the same
latents. A failed collective (a rank died) breaks the group: nothing more is sent and the job ends.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

from vividcli.errors import UsageError, VividError, first_line, unexpected_error

if TYPE_CHECKING:  # torch is imported where it is used: the CLI checks its options before loading it
    import torch

STOP, STEP, JOB = 0, 1, 2  # what the leader tells the workers
LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
# How long a rank waits in a collective for the others: long enough for the leader to caption, encode
# and decode a long video while the workers wait for the next job (NCCL's default is 10 minutes).
COLLECTIVE_TIMEOUT = timedelta(hours=6)


class ParallelStop(Exception):
    """A worker was told to stop (the leader finished, or was interrupted between steps)."""


class RankFailure(VividError):
    """A collective failed, so another rank has died: the whole job ends (not just the input in hand)."""


@dataclass
class StepGroup:
    """This process's place in a step-parallel job."""

    rank: int
    world_size: int
    device: torch.device  # where collectives run: the GPU for NCCL, the CPU for gloo
    broken: bool = field(default=False)  # a collective failed: the ranks are no longer in step

    @property
    def leader(self) -> bool:
        return self.rank == 0

    def owner(self, unit: int) -> int:
        """The rank that runs model call `unit` of a step (round robin: ceil(units / world) calls at most)."""
        return unit % self.world_size

    def command(self, value: int = STOP) -> int:
        """The leader sends `value`; every rank returns what the leader sent."""
        import torch

        flag = torch.tensor([value if self.leader else -1], dtype=torch.int64, device=self.device)
        self.broadcast(flag)
        return int(flag.item())

    def next_step(self) -> None:
        """Called by every rank before a step; a worker told to stop raises ParallelStop."""
        if self.command(STEP) != STEP:
            raise ParallelStop

    def sum(self, tensor: torch.Tensor) -> None:
        """In place: the sum of `tensor` over all ranks (each rank fills its own calls, zeros elsewhere)."""
        self._collective(lambda dist: dist.all_reduce(tensor))

    def broadcast(self, tensor: torch.Tensor) -> None:
        """In place: the leader's `tensor` on every rank."""
        self._collective(lambda dist: dist.broadcast(tensor, src=0))

    def broadcast_object(self, value=None):
        """The leader's picklable `value` on every rank (small things only: shapes, tiles, settings)."""
        box = [value]
        self._collective(lambda dist: dist.broadcast_object_list(box, src=0, device=self.device))
        return box[0]

    def fail(self, exc: BaseException) -> BaseException:
        """`exc` stopped this rank in the middle of a step: the ranks are out of step for good. Returns
        what to raise: a RankFailure naming this rank (a KeyboardInterrupt stays what it is)."""
        self.broken = True
        if isinstance(exc, RankFailure) or not isinstance(exc, Exception):
            return exc
        message = str(exc) if isinstance(exc, VividError) else unexpected_error(exc)
        return RankFailure(f"rank {self.rank}: {message}; the other ranks stop too")

    def _collective(self, call) -> None:
        import torch.distributed as dist

        if self.broken:
            raise RankFailure(f"rank {self.rank}: the ranks are out of step after an earlier failure")
        try:
            call(dist)
        except Exception as exc:
            self.broken = True
            raise RankFailure(f"rank {self.rank}: lost another rank ({first_line(exc, 120)}); "
                              "see that rank's error") from exc

    def finish(self) -> None:
        """End of the job: the leader tells the workers to stop (unless the group is broken); all leave."""
        try:
            if self.leader and not self.broken:
                self.command(STOP)
        finally:
            self.leave()

    def leave(self) -> None:
        """Leave the process group (without a word to the others)."""
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def launcher_world(environ: Mapping[str, str]) -> tuple[int, int] | None:
    """(rank, world size) when a launcher started several processes; None for a plain single process."""
    world = environ.get("WORLD_SIZE", "1").strip()
    if world in ("", "1"):
        return None
    missing = [name for name in LAUNCHER_VARIABLES if not environ.get(name, "").strip()]
    if missing:
        raise UsageError(f"WORLD_SIZE={world} asks for several processes, but {', '.join(missing)} "
                         f"{'is' if len(missing) == 1 else 'are'} not set; start vividvr with torchrun "
                         "(docs/distributed.md), or unset WORLD_SIZE for one process")
    rank = environ["RANK"].strip()
    if not (world.isascii() and world.isdigit() and rank.isascii() and rank.isdigit() and int(rank) < int(world)):
        raise UsageError(f"need whole numbers 0 <= RANK < WORLD_SIZE, got RANK={rank!r} WORLD_SIZE={world!r}")
    return int(rank), int(world)


def join_group(rank: int, world_size: int, device: torch.device | str) -> StepGroup:
    """Join the launcher's process group: NCCL when this rank computes on a GPU, else gloo."""
    import torch
    import torch.distributed as dist

    device = torch.device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, rank=rank, world_size=world_size, timeout=COLLECTIVE_TIMEOUT,
                            **({"device_id": device} if device.type == "cuda" else {}))
    return StepGroup(rank=rank, world_size=world_size, device=device if device.type == "cuda" else torch.device("cpu"))
