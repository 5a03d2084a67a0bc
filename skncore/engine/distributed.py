"""Data parallel probe and train with torch.distributed (`torchrun --nproc-per-node N -m skn probe ...`).

`from_environment()` reads torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK) and joins the process
group: gloo on CPU, nccl on CUDA (each rank on cuda:LOCAL_RANK). Without them it is one process, and
every method below is the identity.

Probe: rank k takes a contiguous shard of the validation set, about N/W examples starting at a multiple of
the batch size (deterministic, in example order; the batches are those of one process), and runs the
statistics pass on it. Each statistic then merges itself across the ranks (skn.statistics.statistic.Statistic.merge,
with the collectives of `Ranks`): the moments are gathered and merged with skn.statistics.stats.merge in rank order
(the folds' moments too), so every rank holds the same float64 moments and ranks the same neurons; the
permutation null and the --control covariates are fed the global example numbers (`ShardStatistic`; the
whole-set permutations are those of one process), and as each rank's co-moments are relative to its own
shift they are re-centred on rank 0's (broadcast) before one all-reduce sums them. The top neurons'
activations and the metric are gathered in rank order, i.e. example order. Only rank 0 writes; other
ranks get no run directory and no progress bars.

Train: each micro-batch's examples are split over the ranks the same way, each rank's loss is scaled
by its share of the batch, and the prompt's gradient is summed over ranks before the optimiser step,
so every rank holds the same prompt, that of one process with the same global batch.

Communication: the probe sends the moments once, at the end (3 L P m float64 per rank, twice with a
holdout, all-gathered so that rank order fixes the merge), the null's R L P m float32 co-moments and the
covariates' q L P m float64 ones per fold (one all-reduce each, after rank 0's shift is broadcast), the exemplars (K x N/W float32) and the metric; training
one P x d gradient per step (and two floats: the loss, and per evaluation the validation loss).

Failures: every collective starts with a health check (an all-reduce of the lowest failing rank). A
rank that fails joins the next check with its rank and broadcasts its message; every rank then raises
`DistributedFailure` with that message (rank 0 removes the files of the unfinished run), so a failing
rank fails the whole run instead of leaving the others waiting.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from skn.errors import DistributedFailure, SknError, UsageError
from skn.statistics.statistic import Collective, Statistic

MESSAGE_BYTES = 2048


@dataclass(frozen=True)
class Ranks:
    """This process's place among the ranks of a run (rank 0 of 1: a plain run)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str = ""  # "gloo" or "nccl" once the process group is joined

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def leader(self) -> bool:
        return self.rank == 0

    @property
    def device(self) -> torch.device:
        """Where collectives run: the rank's GPU under nccl, else the CPU."""
        return torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")

    def shard(self, count: int, unit: int = 1, rank: int = -1) -> slice:
        """This rank's examples (or `rank`'s): a contiguous block, the blocks in rank order cover 0 .. count - 1.
        The blocks start at multiples of `unit` (the probe's batch size): each rank's batches are then those
        of one process, so the activations are bitwise the same (a row padded to another length is not)."""
        rank = self.rank if rank < 0 else rank
        units = -(-count // unit)
        return slice(min(count, unit * (units * rank // self.world)), min(count, unit * (units * (rank + 1) // self.world)))

    # ---------------------------------------------------------------- failures

    def check(self, failed: BaseException | None = None) -> None:
        """A health check: every rank calls it at the same point (or, failing, at the next one)."""
        if not self.active:
            return
        import torch.distributed as dist

        lowest = torch.tensor([self.rank if failed is not None else self.world], dtype=torch.int64, device=self.device)
        dist.all_reduce(lowest, op=dist.ReduceOp.MIN)
        culprit = int(lowest.item())
        if culprit == self.world:
            return
        message = torch.zeros(MESSAGE_BYTES, dtype=torch.uint8, device=self.device)
        if culprit == self.rank and failed is not None:
            text = f"{type(failed).__name__}: {failed}" if not isinstance(failed, SknError) else str(failed)
            data = text.encode("utf-8")[:MESSAGE_BYTES]
            message[: len(data)] = torch.tensor(list(data), dtype=torch.uint8, device=self.device)
        dist.broadcast(message, src=culprit)
        text = bytes(message.cpu().tolist()).rstrip(b"\0").decode("utf-8", errors="replace")
        raise DistributedFailure(f"rank {culprit} of {self.world} failed: {text}")

    def fail(self, error: BaseException) -> None:
        """Called by a failing rank: tell the others (they are, or will be, at a health check)."""
        if self.active and not isinstance(error, DistributedFailure):
            try:
                self.check(error)
            except DistributedFailure:
                pass

    # ---------------------------------------------------------------- collectives

    def all_gather(self, tensor: Tensor) -> list[Tensor]:
        """Every rank's `tensor` (same shape and dtype on all), in rank order, on the tensor's device."""
        if not self.active:
            return [tensor]
        import torch.distributed as dist

        self.check()
        local = tensor.detach().to(self.device).contiguous()
        parts = [torch.empty_like(local) for _ in range(self.world)]
        dist.all_gather(parts, local)
        return [p.to(tensor.device) for p in parts]

    def gather_rows(self, tensor: Tensor, count: int, unit: int = 1) -> Tensor:
        """The ranks' shards (`shard(count, unit)`) of a tensor whose last dimension runs over this rank's
        examples, in example order."""
        if not self.active:
            return tensor
        sizes = [self.shard(count, unit, r).stop - self.shard(count, unit, r).start for r in range(self.world)]
        padded = torch.zeros(*tensor.shape[:-1], max(sizes), dtype=tensor.dtype, device=tensor.device)
        padded[..., : tensor.shape[-1]] = tensor
        parts = self.all_gather(padded)
        return torch.cat([p[..., :n] for p, n in zip(parts, sizes, strict=True)], dim=-1)

    def broadcast_(self, tensor: Tensor, src: int) -> None:
        """Overwrite `tensor` with rank `src`'s, in place."""
        if not self.active:
            return
        import torch.distributed as dist

        self.check()
        local = tensor.to(self.device)
        dist.broadcast(local, src=src)
        if local is not tensor:
            tensor.copy_(local)

    def sum_(self, tensor: Tensor) -> None:
        """All-reduce (sum) in place: the prompt's gradient, the null's and the covariates' co-moments."""
        if not self.active:
            return
        import torch.distributed as dist

        self.check()
        local = tensor.to(self.device)
        dist.all_reduce(local, op=dist.ReduceOp.SUM)
        if local is not tensor:
            tensor.copy_(local)

    def shard_statistics(self, statistics: Sequence[Statistic], count: int, known: Tensor | None,
                         unit: int = 1) -> list[Statistic]:
        """The statistics of this rank's shard, told the global example numbers (identity for one process)."""
        if not self.active:
            return list(statistics)
        part = self.shard(count, unit)
        return [ShardStatistic(s, int(part.start), count, known) for s in statistics]


class ShardStatistic:
    """A skn.statistics.statistic.Statistic fed one shard but told the whole pass: `begin` with all N examples (and the
    whole metric), each batch's `first` shifted by the shard's start."""

    def __init__(self, inner: Statistic, start: int, total: int, known: Tensor | None) -> None:
        self.inner, self._start, self._total, self._known = inner, start, total, known

    def begin(self, count: int, known: Tensor | None) -> None:
        self.inner.begin(self._total, self._known)

    def add_layer(self, layer: int, first: int, acts: Tensor, y: Tensor) -> None:
        self.inner.add_layer(layer, first + self._start, acts, y)

    def finish_batch(self, first: int, y: Tensor) -> None:
        self.inner.finish_batch(first + self._start, y)

    def state(self) -> dict[str, Tensor]:
        return self.inner.state()

    def load_state(self, state: Mapping[str, Tensor]) -> None:
        self.inner.load_state(state)

    def merge(self, ranks: Collective) -> None:
        self.inner.merge(ranks)


def from_environment() -> Ranks:
    """The ranks torchrun started (RANK, WORLD_SIZE, LOCAL_RANK), the process group joined once."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return Ranks()
    import torch.distributed as dist

    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"
    if not dist.is_initialized():
        if backend == "nccl":
            torch.cuda.set_device(local)
        dist.init_process_group(backend)
    return Ranks(rank, world, local, backend)


def check_supported(ranks: Ranks, resume: bool) -> None:
    """What one process can do and several cannot (yet)."""
    if ranks.active and resume:
        raise UsageError("--resume under torchrun: resume in one process (the checkpoints are rank 0's)")


def rank_device(ranks: Ranks, device: str) -> str:
    """The device a rank loads the model on: its own GPU under nccl (auto or cuda), else as asked."""
    if ranks.backend != "nccl":
        return device
    if device in ("auto", "cuda"):
        return f"cuda:{ranks.local_rank}"
    raise UsageError(f"--device {device} under torchrun on GPUs: each rank uses cuda:LOCAL_RANK; pass --device cuda or auto")


def discard_run(out: Path, names: Sequence[str]) -> None:
    """Rank 0, after a failure on any rank: remove the files this run wrote, and the directory if left empty."""
    for name in names:
        path = Path(out) / name
        if path.is_file():
            path.unlink(missing_ok=True)
    try:
        Path(out).rmdir()
    except OSError:
        pass
