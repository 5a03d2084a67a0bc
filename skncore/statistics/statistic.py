"""The one protocol of every statistic streamed by the probe pass (baukit's `runningstats`, made for a pass).

A statistic is fed the pass's batches and nothing else:

    begin(count, known)                   once, before the first batch: the number of examples it will see and
                                          the metric [N] float64 when it is known before the pass (else None)
    add_layer(layer, first, acts, y)      per batch and layer: the prompt rows acts [B, P, m] of examples
                                          first .. first + B - 1, and their metric y [B]; `acts` is lent for
                                          the call only (a statistic copies what it keeps)
    finish_batch(first, y)                once the batch's every layer is in
    state() / load_state(state)           its running state as tensors, exactly (a checkpoint, and the copy
                                          the out-of-memory retry rolls back to)
    merge(ranks)                          after the pass: become the merge of every rank's statistic
                                          (`Collective`; one process: nothing to do)

Every accumulator implements it: the moments (skn.statistics.stats.StatsAccumulator, skn.statistics.folds.FoldAccumulator), the
permutation null (skn.statistics.null.NullAccumulator, and skn.statistics.null.SelectedRows for one fold of it), the covariate
co-moments (skn.statistics.covariate_moments.CovariateAccumulator) and the activation store (skn.statistics.exemplar_store.ActivationStore).
So the pass (skn.engine.probe), its checkpoint (skn.engine.pass_checkpoint), its out-of-memory retry (skn.engine.oom_retry) and
the merge across torchrun's ranks (skn.engine.distributed) treat them alike, and a new statistic is one class.
Each statistic's value after the pass is its own type, read with its own `snapshot()`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from torch import Tensor


class Collective(Protocol):
    """The collectives a statistic merges itself with (skn.engine.distributed.Ranks; inactive for one process).
    Every rank calls them at the same point, in the same order."""

    @property
    def active(self) -> bool: ...

    def all_gather(self, tensor: Tensor) -> list[Tensor]:
        """Every rank's `tensor` (the same shape and dtype on all), in rank order, on the tensor's device."""
        ...

    def broadcast_(self, tensor: Tensor, src: int) -> None:
        """Overwrite `tensor` with rank `src`'s, in place."""
        ...

    def sum_(self, tensor: Tensor) -> None:
        """Sum `tensor` over the ranks, in place."""
        ...


@runtime_checkable
class Statistic(Protocol):
    """A statistic streamed by the probe pass; see the module docstring."""

    def begin(self, count: int, known: Tensor | None) -> None: ...

    def add_layer(self, layer: int, first: int, acts: Tensor, y: Tensor) -> None: ...

    def finish_batch(self, first: int, y: Tensor) -> None: ...

    def state(self) -> dict[str, Tensor]: ...

    def load_state(self, state: Mapping[str, Tensor]) -> None: ...

    def merge(self, ranks: Collective) -> None: ...


@dataclass(frozen=True)
class PassShape:
    """What a statistic's memory depends on, for the memory plan (skn.engine.memory) before any weight loads:
    L layers x P prompt positions x m neurons, one layer's batch of B rows, the model's bytes per element,
    the N examples of the pass (0 = unknown) and whether it runs on a CPU. Each statistic's module says
    its own bytes from it (`moment_bytes`, `fold_moment_bytes`, `null_bytes`, `covariate_bytes`)."""

    layers: int
    positions: int
    width: int
    batch: int
    element_bytes: int
    examples: int = 0
    cpu: bool = False

    @property
    def cells(self) -> int:
        """L P m: one value per neuron, layer and prompt position."""
        return self.layers * self.positions * self.width

    @property
    def batch_cells(self) -> int:
        """B P m: one layer's rows of a batch."""
        return self.batch * self.positions * self.width

