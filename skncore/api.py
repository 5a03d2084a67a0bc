"""The Python API: the same steps as the CLI, as functions over values, for notebooks and scripts.

    loaded = load_model("Qwen/Qwen1.5-1.8B-Chat")
    split = Split(load_examples("train.jsonl"), load_examples("val.jsonl"))
    trained = train(loaded, split.train, split.val, TrainConfig(steps=300), out=Path("RUN"))
    result = probe(loaded, trained.prompt, split.val, "loss", ProbeConfig(top_k=10))
    save_probe(Path("RUN"), result, info={...})
"""

from __future__ import annotations

import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from skn.backend import Backend, resolve_backend
from skn.data import Example, Split
from skn.errors import MetricError, UsageError
from skn.groups import GroupSummaries, field_values, group_summaries, write_groups
from skn.layout import Encoded, Template, encode_all, resolve_template
from skn.metrics import MetricSpec, check_metric, metric_before_pass, parse_metric
from skn.model import LoadedModel
from skn.probe import statistics_pass, top_activations
from skn.progress import ProgressSink, SilentProgress
from skn.rank import Exemplars, Neuron, Reduce, exemplars, rank_neurons
from skn.rundir import EXAMPLES_FILE, ProbeRun, PromptFile, read_prompt, write_examples, write_probe_run, write_prompt
from skn.stats import PearsonStats, correlation
from skn.trainer import TrainConfig, TrainResult, train_prompt
from skn.version import __version__


@dataclass(frozen=True)
class ProbeConfig:
    batch_size: int = 16
    top_k: int = 10
    n_exemplars: int = 5
    reduce: Reduce = Reduce.ABS
    backend: Backend = Backend.AUTO
    template: Template = Template.AUTO


@dataclass(frozen=True)
class ProbeResult:
    neurons: tuple[Neuron, ...]
    corr: Tensor  # [L, P, m] float32, NaN where undefined
    stats: PearsonStats
    top_activations: Tensor  # [K, N] float32, neurons order
    metric: Tensor  # [N] float64
    examples: tuple[Example, ...]
    exemplars: tuple[Exemplars, ...]  # per neuron
    timings: Mapping[str, float] = field(default_factory=dict)


def _max_length(loaded: LoadedModel) -> int:
    config = getattr(loaded.model, "config", None)
    for attr in ("max_position_embeddings", "n_positions"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return 0


def encode(loaded: LoadedModel, examples: Sequence[Example], template: Template, prompt_len: int) -> tuple[Encoded, ...]:
    """Token ids of the examples under the sequence layout (see skn.layout)."""
    return encode_all(loaded.tokenizer, examples, template, _max_length(loaded), prompt_len)


def train(
    loaded: LoadedModel,
    train_examples: Sequence[Example],
    val_examples: Sequence[Example],
    config: TrainConfig = TrainConfig(),
    template: Template = Template.AUTO,
    out: Path | None = None,
    resume: bool = False,
    progress: ProgressSink = SilentProgress(),
) -> TrainResult:
    """Train a soft prompt; with `out`, write `prompt.safetensors` there (and checkpoints for --resume)."""
    train_rows = encode(loaded, train_examples, template, config.prompt_len)
    val_rows = encode(loaded, val_examples, template, config.prompt_len)
    result = train_prompt(loaded, train_rows, val_rows, config, out, resume, progress)
    if out is not None:
        write_prompt(out, PromptFile(result.prompt, loaded.name, resolve_template(template, loaded.tokenizer).value))
    return result


def check_probe_config(config: ProbeConfig) -> None:
    if config.top_k < 1:
        raise UsageError(f"--top-k must be at least 1, got {config.top_k}")
    if config.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {config.batch_size}")
    if config.n_exemplars < 0:
        raise UsageError(f"--exemplars must not be negative, got {config.n_exemplars}")


def probe(
    loaded: LoadedModel,
    prompt: Tensor,
    examples: Sequence[Example],
    metric: str | MetricSpec,
    config: ProbeConfig = ProbeConfig(),
    out: Path | None = None,
    progress: ProgressSink = SilentProgress(),
) -> ProbeResult:
    """Correlate every neuron with the metric over `examples`, rank, and read the top neurons' exemplars.

    With `out`, a metric found useless after the pass (constant, NaN) still leaves its values in
    `out/examples.jsonl` before the error is raised.
    """
    spec = parse_metric(metric) if isinstance(metric, str) else metric
    check_probe_config(config)
    if prompt.dim() != 2 or prompt.shape[1] != loaded.hidden_size:
        raise UsageError(f"the prompt is {tuple(prompt.shape)}, but this model needs [P, {loaded.hidden_size}]")
    prompt_len = int(prompt.shape[0])
    examples = tuple(examples)
    rows = encode(loaded, examples, config.template, prompt_len)
    passed = statistics_pass(loaded, prompt, rows, examples, spec, config.batch_size, config.backend, progress)
    try:
        check_metric(spec, passed.metric, examples)
    except MetricError:
        if out is not None:
            write_examples(Path(out) / EXAMPLES_FILE, examples, passed.metric)
        raise
    corr = correlation(passed.stats)
    neurons = rank_neurons(corr, config.top_k, config.reduce)
    start = time.perf_counter()
    activations = top_activations(loaded, prompt, rows, neurons, config.batch_size, progress)
    exemplar_seconds = time.perf_counter() - start
    return ProbeResult(
        neurons=neurons,
        corr=corr,
        stats=passed.stats,
        top_activations=activations,
        metric=passed.metric,
        examples=examples,
        exemplars=tuple(exemplars(activations[k], config.n_exemplars) for k in range(len(neurons))),
        timings={"probe_pass_s": passed.seconds, "exemplar_pass_s": exemplar_seconds},
    )


def versions() -> dict[str, str]:
    import transformers

    return {"skn": __version__, "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version()}


def probe_info(
    loaded: LoadedModel,
    spec: MetricSpec,
    config: ProbeConfig,
    *,
    data: str,
    val_data: str,
    n_train: int,
    trained: TrainResult | None,
    train_config: TrainConfig | None,
    prompt_source: str,
    seed: int,
    extra: Mapping[str, object] | None = None,
) -> dict[str, object]:
    """The content of run.json: everything needed to know what a run did."""
    info: dict[str, object] = {
        "model": loaded.name,
        "metric": spec.text,
        "data": data,
        "val_data": val_data,
        "n_train": n_train,
        "device": str(loaded.device),
        "dtype": str(loaded.dtype).replace("torch.", ""),
        "layers": loaded.sites.num_layers,
        "width": loaded.sites.width,
        "neuron_module": loaded.sites.names[0].replace(".0.", ".{i}.", 1) if loaded.sites.names else "",
        "prompt": prompt_source,
        "probe_config": {
            "batch_size": config.batch_size,
            "top_k": config.top_k,
            "n_exemplars": config.n_exemplars,
            "reduce": config.reduce.value,
            "backend": resolve_backend(config.backend, loaded.device).value,
            "template": resolve_template(config.template, loaded.tokenizer).value,
        },
        "seed": seed,
        "versions": versions(),
    }
    if train_config is not None:
        train_dict = asdict(train_config)
        train_dict["init"] = train_config.init.token or "random-vocab"
        info["train_config"] = train_dict
    if trained is not None:
        info["train_history"] = [asdict(h) for h in trained.history]
        info["train_best_val_loss"] = trained.best_val_loss
        info["train_best_step"] = trained.best_step
        info["train_step_forward"] = trained.step_forward
        info["train_step_forward_note"] = trained.step_forward_note
    if extra:
        info.update(extra)
    return info


def save_probe(out: Path, result: ProbeResult, info: Mapping[str, object]) -> dict[str, object]:
    """Write the probe's files of the run-directory contract (see skn.rundir); returns run.json's content."""
    full = dict(info)
    full["n_val"] = len(result.examples)
    given = full.get("timings", {})
    timings: dict[str, object] = dict(given) if isinstance(given, Mapping) else {}
    timings.update(result.timings)
    full["timings"] = timings
    full["top_k"] = len(result.neurons)
    write_probe_run(
        Path(out),
        ProbeRun(
            corr=result.corr,
            stats=result.stats,
            neurons=result.neurons,
            top_activations=result.top_activations,
            metric=result.metric,
            examples=result.examples,
            info=full,
        ),
    )
    return full


@dataclass(frozen=True)
class ProbeJob:
    """A whole `skn probe`: train a prompt unless one is given, probe, write the run directory."""

    loaded: LoadedModel
    split: Split
    metric: MetricSpec
    out: Path
    train_config: TrainConfig = TrainConfig()
    probe_config: ProbeConfig = ProbeConfig()
    prompt_path: Path | None = None  # an existing prompt.safetensors (or run directory); None = train one
    resume: bool = False
    data_label: str = ""
    val_data_label: str = ""
    group_by: tuple[str, ...] = ()  # metadata fields to summarise the top neurons' activations by
    extra_info: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class ProbeOutcome:
    result: ProbeResult
    trained: TrainResult | None
    info: Mapping[str, object]
    groups: GroupSummaries | None


def run_probe_job(job: ProbeJob, progress: ProgressSink = SilentProgress()) -> ProbeOutcome:
    """The CLI's `skn probe`, as one call. Files land in `job.out` as soon as each step ends."""
    start = time.perf_counter()
    if not job.split.val:
        raise UsageError("no validation examples to probe")
    check_probe_config(job.probe_config)
    if job.metric.known_before_pass:  # fail before training, not after
        check_metric(job.metric, metric_before_pass(job.metric, job.split.val), job.split.val)
    for name in job.group_by:
        field_values(job.split.val, name)  # a missing group-by field fails now, naming the example
    trained: TrainResult | None = None
    if job.prompt_path is not None:
        prompt_file = read_prompt(job.prompt_path)
        prompt = prompt_file.prompt
        prompt_source = str(job.prompt_path)
    else:
        trained = train(job.loaded, job.split.train, job.split.val, job.train_config, job.probe_config.template, job.out, job.resume, progress)
        prompt = trained.prompt
        prompt_source = "trained"
    result = probe(job.loaded, prompt, job.split.val, job.metric, job.probe_config, job.out, progress)
    timings = {"total_s": time.perf_counter() - start}
    if trained is not None:
        timings["train_s"] = trained.seconds
    info = probe_info(
        job.loaded, job.metric, job.probe_config, data=job.data_label, val_data=job.val_data_label,
        n_train=len(job.split.train), trained=trained, train_config=job.train_config if trained is not None else None,
        prompt_source=prompt_source, seed=job.train_config.seed,
        extra={**job.extra_info, "group_by": list(job.group_by), "timings": timings},
    )
    info = save_probe(job.out, result, info)
    groups = None
    if job.group_by:
        groups = group_summaries(result.top_activations, result.neurons, result.examples, job.group_by)
        write_groups(job.out, groups)
    return ProbeOutcome(result=result, trained=trained, info=info, groups=groups)
