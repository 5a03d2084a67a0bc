"""The top neurons' activations [K, N] from the statistics pass itself: `skn probe` costs one pass.

The exemplars, groups.json, the plots and the report need every top neuron's activation on every
validation example, and which neurons are on top is known only after the pass. Design (exact, bounded):

- `ActivationStore` is a skn.statistics.statistic.Statistic. The pass hands it every layer's prompt rows [B, P, m]
  per batch (the very tensors the statistics merge, in the activation's own dtype), and it appends their
  raw bytes to an anonymous scratch file (`tempfile.TemporaryFile`: unlinked at once, so it vanishes with
  the process, even on a crash), written sequentially: the store holds no more than one batch in memory.
- It is bounded by bytes: `--exemplar-store BYTES` (default 8 GiB). Every example costs L x P x m x
  itemsize bytes; when all L layers do not fit, the store keeps the deepest layers that do
  (floor(budget / (N P m itemsize)) of them), decided on the first batch, so it never exceeds its budget.
- After ranking, `top_activations` reads back only the top cells: per batch, one pread of each needed
  layer's [B, P, m] block into one reused buffer (no memmap, nothing but one block resident), the K
  columns taken out and converted to float32 exactly as the second pass converts them. The file is closed.
- Top neurons in layers the store did not keep (a budget below one layer, or shallow layers when the
  deepest were kept) come from today's second pass (`skn.engine.probe.exemplar_pass`) over just those neurons,
  which stops at the deepest of them: keeping the deepest layers makes that fallback as short as possible.
  `--exemplars-pass always` runs the second pass for every neuron (the old behaviour, for comparison).

Exactness: in the in-pass mode (a label or field metric) both passes feed the same batches (instruction +
prompt) to the same layers, so the values are bitwise those of the second pass. In the post-pass mode
(loss, confidence, ...) the statistics pass also feeds the completion; under causal attention the prompt
positions do not depend on it, but the longer batches round differently: in float32 on CPU the values agree
with the second pass's to about 1e-5 of the largest activation (the tests allow 1e-4 and check that the
exemplars agree). Either way the store holds exactly what the statistics saw and ranked.

Cost: one [B, P, m] write per layer and batch (the gather is shared with the other statistics); on CUDA an
asynchronous copy into a pinned buffer per layer, written once the batch ends. Disk: N L P m itemsize
bytes, e.g. 2.06 GiB for SmolLM2-135M (30 x 20 x 1536, float32) at N = 600.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import IO

import torch
from torch import Tensor

from skn.errors import InternalError, StorageError
from skn.inputs.layout import Encoded
from skn.models.model import LoadedModel
from skn.engine.probe import exemplar_pass
from skn.engine.probe_config import ExemplarsPass, check_store_budget
from skn.engine.progress import ProgressSink, SilentProgress
from skn.ranking.rank import Neuron
from skn.engine.stage import storage_error
from skn.statistics.statistic import Collective

class ActivationStore:
    """Appends every kept layer's prompt rows of every batch to a scratch file; see the module docstring."""

    def __init__(self, layers: int, positions: int, width: int, budget: int, directory: str | None = None) -> None:
        check_store_budget(budget)
        self.layers, self.positions, self.width, self.budget = layers, positions, width, budget
        self._directory = directory
        self._count = 0
        self._file: IO[bytes] | None = None
        self._dtype: torch.dtype | None = None
        self.kept: tuple[int, ...] = ()  # the layers stored, decided on the first batch
        self._decided = False
        self._blocks: dict[tuple[int, int], tuple[int, int]] = {}  # (first, layer) -> (offset, rows)
        self._firsts: list[int] = []  # the batches' first examples, in order
        self._seen: set[int] = set()
        self._cuda_device: torch.device | None = None
        self._pending: list[tuple[int, int, Tensor]] = []  # CUDA: (first, layer, pinned host copy)
        self._pinned: dict[tuple[int, tuple[int, ...]], Tensor] = {}
        self.bytes_written = 0

    # -- the skn.statistics.statistic.Statistic protocol
    def begin(self, count: int, known: Tensor | None) -> None:
        self._count = count

    def add_layer(self, layer: int, first: int, acts: Tensor, y: Tensor) -> None:
        if not self._decided:
            self._decide(acts.dtype)
        if layer not in self.kept:
            return
        if acts.dtype != self._dtype or acts.shape[1:] != (self.positions, self.width):
            raise InternalError(f"activation store: layer {layer} gave {tuple(acts.shape)} {acts.dtype}, "
                                f"expected [B, {self.positions}, {self.width}] {self._dtype}")
        if acts.device.type == "cuda":
            key = (layer, tuple(acts.shape))
            host = self._pinned.get(key)
            if host is None:
                host = self._pinned[key] = torch.empty(acts.shape, dtype=acts.dtype, pin_memory=True)
            host.copy_(acts, non_blocking=True)
            self._cuda_device = acts.device
            self._pending.append((first, layer, host))
            return
        self._write(first, layer, acts.detach().to("cpu"))

    def finish_batch(self, first: int, y: Tensor) -> None:
        if self._pending:
            torch.cuda.current_stream(self._cuda_device).synchronize()  # the batch's copies have landed
            for f, layer, host in self._pending:
                self._write(f, layer, host)
            self._pending.clear()

    def state(self) -> dict[str, Tensor]:
        """How much is stored (batches, bytes): the out-of-memory retry rolls a failed batch back to it."""
        return {"batches": torch.tensor(len(self._firsts), dtype=torch.int64),
                "bytes": torch.tensor(self.bytes_written, dtype=torch.int64)}

    def load_state(self, state: Mapping[str, Tensor]) -> None:
        """Forget what came after `state()` was taken: the file is cut back and the later batches' blocks go.
        (A checkpointed pass has no store: its scratch file would not survive the restart.)"""
        batches, size = int(state["batches"]), int(state["bytes"])
        if not 0 <= batches <= len(self._firsts) or not 0 <= size <= self.bytes_written:
            raise InternalError(f"activation store: cannot go back to {batches} batches, {size} bytes "
                                f"from {len(self._firsts)}, {self.bytes_written}")
        for first in self._firsts[batches:]:
            self._seen.discard(first)
            for layer in self.kept:
                self._blocks.pop((first, layer), None)
        del self._firsts[batches:]
        self._pending.clear()
        if self._file is not None:
            self._file.truncate(size)
            self._file.seek(size)
        self.bytes_written = size

    def merge(self, ranks: Collective) -> None:
        """Nothing to merge: each rank reads its own examples' activations, gathered afterwards in example order."""

    # -- after the pass
    @property
    def per_layer_bytes(self) -> int:
        """What one layer of all N examples takes (0 before the first batch)."""
        itemsize = self._dtype.itemsize if self._dtype is not None else 0
        return self._count * self.positions * self.width * itemsize

    def file_bytes(self) -> int:
        return os.fstat(self._file.fileno()).st_size if self._file is not None else 0

    def read(self, neurons: Sequence[Neuron]) -> Tensor:
        """[K, N] float32: the stored neurons' activations at their own positions (every layer kept)."""
        out = torch.empty(len(neurons), self._count, dtype=torch.float32)
        missing = [n for n in neurons if n.layer not in self.kept]
        if missing:
            raise InternalError(f"activation store: layer {missing[0].layer} was not kept")
        if not neurons or self._file is None or self._dtype is None:
            return out
        dtype = self._dtype
        fd = self._file.fileno()
        by_layer: dict[int, list[tuple[int, Neuron]]] = {}
        for k, n in enumerate(neurons):
            by_layer.setdefault(n.layer, []).append((k, n))
        buffer = bytearray()
        for first in self._firsts:
            for layer, members in by_layer.items():
                offset, rows = self._blocks[(first, layer)]
                size = rows * self.positions * self.width * self.itemsize
                if len(buffer) != size:
                    buffer = bytearray(size)
                if size and os.preadv(fd, [buffer], offset) != size:
                    raise InternalError(f"activation store: short read at byte {offset}")
                block = torch.frombuffer(buffer, dtype=dtype).view(rows, self.positions, self.width) if size else None
                for k, n in members:
                    if block is not None:
                        out[k, first : first + rows] = block[:, n.position, n.index].to(torch.float32)
        return out

    @property
    def itemsize(self) -> int:
        return self._dtype.itemsize if self._dtype is not None else 0

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._pinned.clear()
        self._pending.clear()

    # -- inside
    def _decide(self, dtype: torch.dtype) -> None:
        self._decided, self._dtype = True, dtype
        per_layer = self.per_layer_bytes
        fit = self.layers if per_layer == 0 else min(self.layers, self.budget // per_layer)
        self.kept = tuple(range(self.layers - fit, self.layers))
        if self.kept and per_layer:
            try:
                self._file = tempfile.TemporaryFile(mode="w+b", buffering=0, prefix="skn-exemplars-", dir=self._directory)
            except OSError as err:
                self._refused(err)
                raise

    def _refused(self, err: OSError) -> None:
        """Raises a full or limited scratch folder (TMPDIR) as one line that names it and the way around it;
        returns for any other OSError (the caller re-raises it)."""
        refused = storage_error(err, f"the activation store's scratch file in {self._directory or tempfile.gettempdir()}")
        if refused is not None:
            raise StorageError(f"{refused} (point TMPDIR at a folder with room, or pass --exemplars-pass always)") from err

    def _write(self, first: int, layer: int, acts: Tensor) -> None:
        if self._file is None:
            raise InternalError("activation store: a write before the file was opened")
        rows = int(acts.shape[0])
        data = acts.contiguous().reshape(-1).view(torch.uint8).numpy()
        if self.bytes_written + data.nbytes > self.budget:
            raise InternalError(f"activation store: {self.bytes_written + data.nbytes} bytes would exceed its budget "
                                f"of {self.budget} (more examples than the pass announced?)")
        if first not in self._seen:
            self._seen.add(first)
            self._firsts.append(first)
        self._blocks[(first, layer)] = (self.bytes_written, rows)
        view: memoryview = data.data
        while view.nbytes:
            try:
                done = self._file.write(view)
            except OSError as err:
                self._refused(err)
                raise
            if not done:
                raise InternalError("activation store: the scratch file took no bytes (disk full?)")
            view = view[done:]
        self.bytes_written += data.nbytes


@dataclass(frozen=True)
class ExemplarSource:
    """What `top_activations` did, for run.json's "exemplars"."""

    mode: ExemplarsPass
    store_budget: int  # bytes
    store_bytes: int  # bytes the scratch file reached (0: no store)
    kept_layers: tuple[int, ...]  # the layers the store kept
    second_pass: bool
    second_pass_neurons: int
    second_pass_s: float
    read_s: float

    def summary(self) -> dict[str, object]:
        return {
            "mode": self.mode.value,
            "store_budget_bytes": self.store_budget,
            "store_bytes": self.store_bytes,
            "store_layers": [self.kept_layers[0], self.kept_layers[-1]] if self.kept_layers else None,
            "second_pass": self.second_pass,
            "second_pass_neurons": self.second_pass_neurons,
        }  # the times go to run.json's timings (exemplar_pass_s, store_read_s): a run's files are otherwise reproducible


def exemplar_line(summary: object, seconds: float) -> str:
    """One line for the user when a second pass ran in the auto mode ("" otherwise), from run.json's
    "exemplars" (`ExemplarSource.summary`) and the second pass's time."""
    if not isinstance(summary, dict) or summary.get("mode") != ExemplarsPass.AUTO.value or not summary.get("second_pass"):
        return ""
    layers = summary.get("store_layers")
    kept = f"layers {layers[0]}-{layers[1]}" if isinstance(layers, list) else "no layer"
    return (f"exemplars: the activation store (--exemplar-store {summary.get('store_budget_bytes')} bytes) held {kept}; "
            f"a second pass read {summary.get('second_pass_neurons')} top neuron(s) in "
            f"{seconds:.1f} s")


def top_activations(
    store: ActivationStore | None,
    loaded: LoadedModel,
    prompt: Tensor,
    rows: Sequence[Encoded],
    neurons: Sequence[Neuron],
    batch_size: int,
    progress: ProgressSink = SilentProgress(),
) -> tuple[Tensor, ExemplarSource]:
    """[K, N] float32: each top neuron's activation at its own position on every example, from the store
    where it kept the neuron's layer, else from a second pass over just the others (stopped at their
    deepest layer). `store` None: the second pass for all (`--exemplars-pass always`)."""
    start = time.perf_counter()
    kept = store.kept if store is not None else ()
    from_store = [k for k, n in enumerate(neurons) if n.layer in kept]
    rest = [k for k, n in enumerate(neurons) if n.layer not in kept]
    out = torch.empty(len(neurons), len(rows), dtype=torch.float32)
    if store is not None and from_store:
        out[from_store] = store.read([neurons[k] for k in from_store])
    read_s = time.perf_counter() - start
    start = time.perf_counter()
    if rest:
        out[rest] = exemplar_pass(loaded, prompt, rows, [neurons[k] for k in rest], batch_size, progress)
    second_s = time.perf_counter() - start
    source = ExemplarSource(
        mode=ExemplarsPass.AUTO if store is not None else ExemplarsPass.ALWAYS,
        store_budget=store.budget if store is not None else 0,
        store_bytes=store.file_bytes() if store is not None else 0,
        kept_layers=kept, second_pass=bool(rest), second_pass_neurons=len(rest),
        second_pass_s=second_s if rest else 0.0, read_s=read_s,
    )
    return out, source


__all__ = ["ActivationStore", "ExemplarSource", "exemplar_line", "top_activations"]
