"""The probe pass: run the validation set once and stream neuron-metric statistics.

Hooks on each layer's neuron module (the FFN down projection: its input is the activation) read
the P prompt positions of every row. When the metric is known before the pass (a label or a field)
each layer's prompt rows are merged into the statistics inside the hook, straight from the
[B, T, m] input (the Triton kernel on GPU reads them in place, no slab), and the forward stops
after the last layer: the completion is not even fed. When the metric comes from the outputs (loss,
confidence, correct, python:) the pass keeps one batch's prompt-position activations, [L, B, P, m],
and merges them once the batch's metric is known.

Every statistic of the pass (the moments, the null, the covariates, the activation store) implements one
protocol, skn.statistics.statistic.Statistic, so the pass feeds them, checkpoints them, rolls them back after an
out-of-memory batch and merges them across ranks alike. The top neurons' activations for the exemplars
come from the same pass (skn.statistics.exemplar_store, a statistic). `exemplar_pass` is the second, shorter pass for what the store does not keep: it feeds only
the instruction and the prompt (activations at prompt positions do not depend on what follows) and
stops at the deepest top layer.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from skn.statistics.backend import Backend, fold_update, gated_update, gathered_update, layer_update
from skn.engine.fused_mlp import capture_gated, unsupported_reason
from skn.kernels.reference import gated_activation, update_layer_gated_torch_
from skn.inputs.data import Example
from skn.errors import InternalError
from skn.statistics.folds import FoldAccumulator, FoldStats
from skn.training.scoring import completion_scores
from skn.inputs.layout import Batch, Encoded, PromptRowBuffer, check_offsets, gather_prompt_rows, make_batch
from skn.engine.oom_retry import run_batches
from skn.engine.distributed import Ranks
from skn.engine.pass_checkpoint import PassCheckpoint, PassSaver, fingerprint
from skn.inputs.metrics import MetricKind, MetricSpec, check_metric, load_function, metric_after_pass, metric_before_pass
from skn.models.model import LoadedModel, batch_pad_id
from skn.engine.progress import ProgressSink, SilentProgress
from skn.training.prompt import splice
from skn.ranking.rank import Neuron
from skn.statistics.statistic import Collective, Statistic
from skn.statistics.stats import PearsonStats, StatsAccumulator


class _StopForward(Exception):
    """Raised by the last hook a pass needs: the rest of the network is not computed."""


LayerSink = Callable[[int, Tensor], None]
"""(layer, x [B, T, m]) -> None: what a hook does with one layer's neuron activations."""


@contextmanager
def capture_activations(loaded: LoadedModel, layers: Sequence[int], sink: LayerSink, stop_after: int = -1) -> Iterator[None]:
    """While active, every forward of `loaded.model` hands each listed layer's neuron activations
    (the input of its down projection, [B, T, m]) to `sink`; with `stop_after >= 0` the forward
    raises _StopForward once that layer is read."""
    handles = []

    def hook_for(layer: int) -> Callable[[nn.Module, tuple[Tensor, ...]], None]:
        def hook(module: nn.Module, args: tuple[Tensor, ...]) -> None:
            # a layer placed on another device (--device-map) hands its activations to the statistics' device
            sink(layer, args[0].to(loaded.device))
            if layer == stop_after:
                raise _StopForward

        return hook

    try:
        for layer in layers:
            handles.append(loaded.sites.modules[layer].register_forward_pre_hook(hook_for(layer)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _forward_to_sites(loaded: LoadedModel, batch: Batch, prompt: Tensor) -> None:
    """Run the model on a batch until a hook stops it."""
    embeds = splice(loaded, batch, prompt)
    try:
        loaded.model(inputs_embeds=embeds, attention_mask=batch.attention_mask.to(loaded.device), use_cache=False)
    except _StopForward:
        return
    raise InternalError("the forward pass ran past its last hook")


@dataclass(frozen=True)
class PassResult:
    stats: PearsonStats
    metric: Tensor  # [N] float64, in example order
    seconds: float
    folds: FoldStats | None = None  # with a holdout: each fold's moments (`stats` is then their merge)
    batch_size: int = 0  # the batch size at the end of the pass (smaller after an out-of-memory retry)


def statistics_pass(
    loaded: LoadedModel,
    prompt: Tensor,
    rows: Sequence[Encoded],
    examples: Sequence[Example],
    spec: MetricSpec,
    batch_size: int = 16,
    backend: Backend = Backend.AUTO,
    progress: ProgressSink = SilentProgress(),
    confirm: Tensor | None = None,
    statistics: Sequence[Statistic] = (),
    fused_mlp: bool = False,
    checkpoint: PassCheckpoint | None = None,
    retry_oom: bool | None = None,
    ranks: Collective = Ranks(),
    known: Tensor | None = None,
) -> PassResult:
    """One pass over the validation set: the metric per example and the streamed statistics.

    `confirm` ([N] bool, see skn.statistics.folds): route each example's rows to the confirmation fold (True) or the
    selection fold; the result then carries both folds' moments and `stats` is their Chan merge.
    None: one set of moments over all examples.

    `statistics` (skn.statistics.statistic) are fed every batch beside the moments; in the in-pass mode the prompt rows are
    gathered from each layer's [B, T, m] input (a slab of one layer) only when there are such statistics or folds.
    After the last batch every statistic, the moments included, is merged across `ranks` (a rank's pass covers
    its shard of the examples; one process: nothing to merge), so the result is the whole set's.

    With `fused_mlp` (a SiLU-gated model, see skn.engine.fused_mlp) the statistics come from gate and up inside
    skn's own MLP forward; the numbers are the plain path's. With a label metric the gated kernel updates
    the moments in place only when nothing else needs the prompt rows (no holdout, no other statistic);
    otherwise the product is formed and handed on as on the plain path.

    `checkpoint` (skn.engine.pass_checkpoint): save the state every few batches, and resume from a saved one.
    `retry_oom` (skn.engine.oom_retry; None = on CUDA): a batch out of CUDA memory is retried at half the size, every
    statistic rolled back first.

    `known` ([N] float64): the metric of `examples` when it is known before the pass, computed and checked by the
    caller; None: computed and checked here from `spec`.
    """
    if len(rows) != len(examples):
        raise InternalError(f"{len(rows)} encoded rows for {len(examples)} examples")
    start_time = time.perf_counter()
    sites = loaded.sites
    prompt_len = int(prompt.shape[0])
    # the moments: one set (`plain`, which the in-pass mode can update straight from each layer's input), or with a
    # holdout each batch's rows go to their fold's moments (skn.statistics.folds)
    plain: StatsAccumulator | None = None
    folds: FoldAccumulator | None = None
    moments: Statistic
    if confirm is None:
        moments = plain = StatsAccumulator(sites.num_layers, prompt_len, sites.width, loaded.device,
                                           layer_update(backend, loaded.device))
    elif confirm.shape != (len(rows),):
        raise InternalError(f"fold mask of shape {tuple(confirm.shape)} for {len(rows)} examples")
    else:
        moments = folds = FoldAccumulator(confirm, sites.num_layers, prompt_len, sites.width, loaded.device,
                                          fold_update(backend, loaded.device))
    rows_update = gathered_update(backend, loaded.device)
    fused_mlp = fused_mlp and not unsupported_reason(loaded)  # elsewhere the plain path (skn.engine.run says so)
    gated = gated_update(backend, loaded.device) if fused_mlp else update_layer_gated_torch_
    fused_in_pass = fused_mlp and confirm is None and not statistics
    pad = batch_pad_id(loaded)
    all_layers = list(range(sites.num_layers))
    if known is None and spec.known_before_pass:
        known = metric_before_pass(spec, examples)
        check_metric(spec, known, examples)
    elif known is not None and (not spec.known_before_pass or known.shape != (len(rows),)):
        raise InternalError(f"a metric of shape {tuple(known.shape)} given for {len(rows)} examples of '{spec.text}'")
    function = load_function(spec) if spec.kind is MetricKind.PYTHON else None
    parts: list[Statistic] = [moments, *statistics]
    for part in parts:
        part.begin(len(rows), known)
    saver = PassSaver(checkpoint, parts, len(rows), fingerprint(prompt, rows, spec.text, confirm, checkpoint.identity)) \
        if checkpoint is not None else None
    start, values = saver.start() if saver is not None else (0, [])
    retry = loaded.device.type == "cuda" if retry_oom is None else retry_oom
    # the statistics fed gathered prompt rows in the in-pass mode (the plain moments read each layer's input itself)
    gathered = list(statistics) if plain is not None else parts
    prompt_rows = PromptRowBuffer()  # the in-pass mode's gathered rows: valid during one layer's hook only
    with progress.task("probing", len(rows)) as advance, torch.no_grad():
        advance(start)

        def one_batch(first: int, size: int) -> None:
            chunk = slice(first, first + size)
            if known is not None:
                # in-pass: each layer's prompt rows are merged inside its hook, no slab is kept
                y = known[chunk].to(loaded.device)
                batch = make_batch(rows[chunk], prompt_len, pad, with_completion=False)
                check_offsets(batch.prompt_start, prompt_len, batch.input_ids.shape[1])
                offsets = batch.prompt_start.to(loaded.device)

                def merge_rows(layer: int, x: Tensor) -> None:
                    if plain is not None:
                        rows_update(plain.moments(layer), x, offsets, y)  # in place, from x itself
                        if not statistics:
                            return
                    acts = prompt_rows.gather(x, offsets, prompt_len)  # one gather for the folds and every statistic
                    for part in gathered:
                        part.add_layer(layer, first, acts, y)

                if fused_in_pass and plain is not None:
                    fused = plain

                    def merge_gated(layer: int, g: Tensor, u: Tensor) -> None:
                        gated(fused.moments(layer), g, u, offsets, y)
                        if layer == all_layers[-1]:
                            raise _StopForward

                    with capture_gated(loaded, all_layers, merge_gated):
                        _forward_to_sites(loaded, batch, prompt)
                else:
                    with capture_activations(loaded, all_layers, merge_rows, stop_after=all_layers[-1]):
                        _forward_to_sites(loaded, batch, prompt)
                values.append(known[chunk])
            else:
                # post-pass: keep this batch's prompt rows [L, B, P, m] until its metric is known
                batch = make_batch(rows[chunk], prompt_len, pad)
                slab: dict[int, Tensor] = {}

                def keep_rows(layer: int, x: Tensor) -> None:
                    slab[layer] = gather_prompt_rows(x, batch.prompt_start, prompt_len)

                def keep_gated(layer: int, g: Tensor, u: Tensor) -> None:
                    slab[layer] = gated_activation(gather_prompt_rows(g, batch.prompt_start, prompt_len),
                                                   gather_prompt_rows(u, batch.prompt_start, prompt_len))

                capture = capture_gated(loaded, all_layers, keep_gated) if fused_mlp else capture_activations(loaded, all_layers, keep_rows)
                with capture:
                    scores = completion_scores(loaded, batch, prompt)
                y_cpu = metric_after_pass(spec, examples[chunk], scores, function)
                y = y_cpu.to(loaded.device)
                for layer in all_layers:
                    acts = slab.pop(layer)
                    for part in parts:
                        part.add_layer(layer, first, acts, y)
                values.append(y_cpu)
            for part in parts:
                part.finish_batch(first, y)
            advance(batch.size)

        def shrunk(done: int, size: int) -> None:
            while sum(int(v.numel()) for v in values) > done:  # a batch rolled back may have kept its metric
                values.pop()
            advance(0, f"out of memory: batch size {size}")

        final_size = run_batches(len(rows), start, batch_size, one_batch,
                                 lambda done: saver.after_batch(done, values) if saver is not None else None,
                                 parts, retry, shrunk)
    for part in parts:
        part.merge(ranks)
    metric = torch.cat(values)
    if folds is not None:
        fold_stats = folds.snapshot()
        return PassResult(fold_stats.full, metric, time.perf_counter() - start_time, fold_stats, final_size)
    if plain is None:
        raise InternalError("a pass without moments")
    return PassResult(stats=plain.snapshot(), metric=metric, seconds=time.perf_counter() - start_time,
                      batch_size=final_size)


def exemplar_pass(
    loaded: LoadedModel,
    prompt: Tensor,
    rows: Sequence[Encoded],
    neurons: Sequence[Neuron],
    batch_size: int = 16,
    progress: ProgressSink = SilentProgress(),
) -> Tensor:
    """[K, N] float32: each neuron's activation at its own position on every example, from a pass
    that feeds only instruction + prompt and stops at the deepest layer among `neurons`."""
    layers = sorted({n.layer for n in neurons})
    out = torch.empty(len(neurons), len(rows), dtype=torch.float32)
    if not neurons:
        return out
    pad = batch_pad_id(loaded)
    prompt_len = int(prompt.shape[0])
    by_layer = {layer: [(k, n) for k, n in enumerate(neurons) if n.layer == layer] for layer in layers}
    with progress.task("exemplars", len(rows)) as advance, torch.no_grad():
        for first in range(0, len(rows), batch_size):
            batch = make_batch(rows[first : first + batch_size], prompt_len, pad, with_completion=False)
            end = first + batch.size

            def sink(layer: int, x: Tensor) -> None:
                acts = gather_prompt_rows(x, batch.prompt_start, prompt_len)
                for k, n in by_layer[layer]:
                    out[k, first:end] = acts[:, n.position, n.index].to("cpu", torch.float32)

            with capture_activations(loaded, layers, sink, stop_after=layers[-1]):
                _forward_to_sites(loaded, batch, prompt)
            advance(batch.size)
    return out
