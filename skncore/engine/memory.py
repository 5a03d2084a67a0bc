"""A memory plan before any weights load: will this run fit its device, and if not, what would.

Everything comes from the model's config, the tokenized examples and the run's options; no weight is
read. With b the bytes per element of the model's dtype, B the batch size (never more than the examples a
batch is drawn from: the training examples for training, the N probe examples for the pass), T the longest sequence
(instruction + P prompt vectors + completion), K the scored tail (the completion positions, the only
logits computed), H the hidden size, m the FFN width, L the layers, V the vocabulary, h the heads:

- weights: the parameter count of the model built on the meta device (transformers' `num_parameters`,
  tied weights counted once) times b; with --quantize the decoder's linear weights take 0.5625 (4-bit:
  half a byte and a float32 scale per 64) or 1.0625 bytes (8-bit) and the rest keeps b;
- statistics, each statistic's own share from its module (`moment_bytes`, `fold_moment_bytes`, `null_bytes`,
  `covariate_bytes` of skn.statistics, over a `PassShape`): 3 float64 moments of L * P * m (with a holdout's folds 8: skn.statistics.fold_sums' shifts and sums of
  both folds), and the float64 workspace of one layer's batch, B * P * m (with the folds also its rows in fold
  order, B * P * m * b); with the permutation null its float32 co-moments, 4 (R + 1) L P m, and the
  reduction at the end, about three float64 copies of R L P m (measured: tests/engine/test_memory.py); with q
  covariates (--control, skn.statistics.covariate_moments) their float64 co-moments, 8 q L P m per fold, and with a metric known
  after the pass the Freedman-Lane null's q more blocks of permuted rows, 4 q (R + 1) L P m, and the
  float64 reduction of one chunk of permutations (at most 2^24 cells: 2 x 8 x 2^24); on a CPU the null's
  row buffer (skn.statistics.null.buffer_rows: float32 rows, 4 L P m bytes each, up to 64 within 64 MiB, never more
  than the N examples);
- probe batch: one layer's transients, B * T * (4H + 3m) * b, the attention scores B * h * T^2 * b,
  the prompt rows kept for a metric known after the pass, L * B * P * m * b, and the logits,
  B * K * V * (b + 8) (the model's and float32 log-softmax and its gradient's worth);
- training: the activations autograd saves, per layer B * T * (6H + 3m) * b plus B * h * T^2 * b,
  and the logits as above times 2; with gradient checkpointing only each layer's input, L * B * T * H * b,
  plus one layer's saved activations while it is recomputed; and the training items' kept instruction keys
  and values (skn.training.instruction_cache), 2 L H b per token (an upper bound: grouped-query attention keeps
  fewer) of T tokens per training example, never more than its budget (`--instruction-cache`;
  not counted when the number of training examples is unknown).

The peak is weights + the larger of training and probing (the statistics live only while probing).
`FACTOR` (measured on CPU, see tests/engine/test_memory.py) covers allocator slack. These are estimates: the
test holds them within 20% of a real run's peak RSS on CPU.

A run that does not fit stops before a weight loads, with advice naming what would fit (the permutation
null first when it takes most of the memory): on CUDA whenever the plan exceeds the free memory, on a CPU
(where swap and memory-mapped weights absorb an overshoot) only when it needs more than
`CPU_REFUSE_RATIO` times the available memory plus `CPU_REFUSE_SLACK`; a smaller overshoot is a warning.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from skn.inputs.data import Example
from skn.errors import ModelError, UsageError
from skn.models.gguf import find_gguf, require_gguf_support
from skn.inputs.layout import Template, encode_all
from skn.models.load_checks import refuse_non_causal
from skn.models.model import DTypeLike, pick_device, pick_dtype
from skn.statistics.covariate_moments import covariate_bytes
from skn.models.quantize import Quantize, require
from skn.statistics.folds import fold_moment_bytes
from skn.statistics.null import null_bytes
from skn.statistics.statistic import PassShape
from skn.statistics.stats import moment_bytes
from skn.training.trainer import TrainConfig

GIB = 1024**3
FACTOR = 1.0  # allocator slack on top of the tensors counted
CPU_REFUSE_RATIO = 2  # on a CPU a plan this many times the available memory (plus the slack) is refused
CPU_REFUSE_SLACK = GIB


class PlanUnavailable(ModelError):
    """The model cannot be built on the meta device (its own code needs real tensors): no plan, the run goes on."""


@dataclass(frozen=True)
class ModelShape:
    """What the plan needs of a model, read from its config on the meta device."""

    layers: int
    width: int  # m, the FFN width (neurons per layer)
    hidden: int
    vocab: int
    heads: int
    parameters: int  # tied weights once
    linear_parameters: int  # weights of the decoder layers' nn.Linear modules (what --quantize shrinks)


@dataclass(frozen=True)
class Workload:
    """The run's sizes: batch, longest sequence, scored tail, prompt length, and what it does."""

    batch_size: int
    seq_len: int
    scored_len: int
    prompt_len: int
    training: bool
    gradient_checkpointing: bool
    metric_after_pass: bool  # loss/confidence/...: the prompt rows of a batch are kept until it is scored
    null_permutations: int = 0  # R of the permutation null (skn.statistics.null); 0 = off
    folds: bool = False  # a holdout: one more set of moments (skn.statistics.folds)
    covariates: int = 0  # q of --control (skn.statistics.partial)
    probe_examples: int = 0  # N of the probe pass: the null's CPU row buffer never holds more rows (0 = unknown)
    train_examples: int = 0  # the training examples a training batch is drawn from (0 = unknown)
    instruction_cache: int = TrainConfig.instruction_cache_bytes  # the budget of the kept instructions (skn.training.instruction_cache)

    @property
    def probe_batch(self) -> int:
        """The probe pass's largest batch: --batch-size, never more than the N examples probed."""
        return min(self.batch_size, self.probe_examples) if self.probe_examples else self.batch_size

    @property
    def train_batch(self) -> int:
        """Training's largest batch: --batch-size, never more than the training examples."""
        return min(self.batch_size, self.train_examples) if self.train_examples else self.batch_size


@dataclass(frozen=True)
class MemoryPlan:
    device: str
    dtype: str
    quantize: str
    weights_bytes: int
    stats_bytes: int
    probe_bytes: int
    train_bytes: int  # as asked (with or without checkpointing)
    train_plain_bytes: int
    train_checkpointed_bytes: int
    peak_bytes: int
    free_bytes: int | None  # what the device has free now; None when unknown
    null_bytes: int = 0  # the permutation null's part of stats_bytes

    @property
    def fits(self) -> bool:
        return self.free_bytes is None or self.peak_bytes <= self.free_bytes

    def line(self) -> str:
        """The plan in one line."""
        free = f", {gib(self.free_bytes)} free" if self.free_bytes is not None else ""
        quant = f" ({self.quantize})" if self.quantize != Quantize.NONE.value else ""
        train = (f"training {gib(self.train_bytes)} (plain {gib(self.train_plain_bytes)}, "
                 f"checkpointed {gib(self.train_checkpointed_bytes)})") if self.train_bytes else "no training"
        null = f" (permutation null {gib(self.null_bytes)})" if self.null_bytes else ""
        return (f"memory plan on {self.device}: peak {gib(self.peak_bytes)}{free} = weights {gib(self.weights_bytes)} "
                f"{self.dtype}{quant} + max({train}, probe {gib(self.probe_bytes)} with statistics "
                f"{gib(self.stats_bytes)}{null})")

    def to_json(self) -> str:
        record = {
            "device": self.device, "dtype": self.dtype, "quantize": self.quantize,
            "weights_bytes": self.weights_bytes, "stats_bytes": self.stats_bytes, "probe_bytes": self.probe_bytes,
            "train_bytes": self.train_bytes, "train_plain_bytes": self.train_plain_bytes,
            "train_checkpointed_bytes": self.train_checkpointed_bytes, "peak_bytes": self.peak_bytes,
            "free_bytes": self.free_bytes, "fits": self.fits,
        }
        return json.dumps(record, allow_nan=False)


def gib(n: int) -> str:
    return f"{n / GIB:.2f} GiB"


def model_shape(config: object, neuron_module: str = "", trust_remote_code: bool = False) -> ModelShape:
    """Build the model on the meta device (no memory, no weights; what accelerate's `init_empty_weights`
    does) and count its parameters with transformers' own `num_parameters`; its neurons are found as the
    load will find them (`--neuron-module` when given)."""
    from transformers import AutoModelForCausalLM

    from skn.models.model import find_sites

    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)  # type: ignore[no-untyped-call]
    except Exception as err:  # a model's own code may need real tensors to be built
        first = next((line.strip() for line in str(err).splitlines() if line.strip()), "")
        raise PlanUnavailable(f"no memory plan: {type(config).__name__} cannot be built on the meta device "
                              f"({type(err).__name__}: {first})") from None
    sites = find_sites(model, str(getattr(config, "model_type", "")), neuron_module)
    hidden = int(model.get_input_embeddings().weight.shape[1])
    vocab = int(model.get_input_embeddings().weight.shape[0])
    heads = int(getattr(config, "num_attention_heads", 0) or getattr(config, "n_head", 0) or 1)
    output = model.get_output_embeddings()
    skip = {id(output.weight)} if output is not None else set()
    skip.add(id(model.get_input_embeddings().weight))
    linear = sum(int(m.weight.numel()) for m in model.modules()
                 if isinstance(m, torch.nn.Linear) and id(m.weight) not in skip)
    return ModelShape(sites.num_layers, sites.width, hidden, vocab, heads, int(model.num_parameters()), linear)


def element_bytes(dtype: torch.dtype) -> int:
    return int(torch.empty((), dtype=dtype).element_size())


def plan(shape: ModelShape, work: Workload, dtype: torch.dtype, quantize: Quantize, device: torch.device,
         free_bytes: int | None) -> MemoryPlan:
    """The estimate of the module docstring."""
    b = element_bytes(dtype)
    T, K, P = work.seq_len, work.scored_len, work.prompt_len
    B, Bt = work.probe_batch, work.train_batch
    H, m, L, V, h = shape.hidden, shape.width, shape.layers, shape.vocab, shape.heads
    if quantize is Quantize.NONE:
        weights = shape.parameters * b
    else:
        weights = int(shape.linear_parameters * quantize.weight_bytes) + (shape.parameters - shape.linear_parameters) * b
    # each statistic's share comes from its own module
    pass_shape = PassShape(L, P, m, B, b, work.probe_examples, device.type == "cpu")
    null = null_bytes(pass_shape, work.null_permutations, work.covariates, work.metric_after_pass)
    stats = (fold_moment_bytes(pass_shape) if work.folds else moment_bytes(pass_shape)) + null
    if work.covariates:
        stats += covariate_bytes(work.covariates, pass_shape.cells, work.folds)
    logits = B * K * V * (b + 8)
    attention = B * h * T * T * b
    layer_transients = B * T * (4 * H + 3 * m) * b + attention
    slab = L * B * P * m * b if work.metric_after_pass else 0
    probe = stats + layer_transients + slab + logits
    train_logits = Bt * K * V * (b + 8)
    saved_layer = Bt * T * (6 * H + 3 * m) * b + Bt * h * T * T * b
    train_plain = L * saved_layer + 2 * train_logits
    train_checkpointed = L * Bt * T * H * b + saved_layer + 2 * train_logits
    kept_instructions = min(work.instruction_cache, work.train_examples * T * 2 * L * H * b)  # 0: unknown
    train_plain += kept_instructions
    train_checkpointed += kept_instructions
    train = (train_checkpointed if work.gradient_checkpointing else train_plain) if work.training else 0
    peak = int(FACTOR * (weights + max(train, probe)))
    return MemoryPlan(str(device), str(dtype).replace("torch.", ""), quantize.value, int(weights), stats, probe,
                      train, train_plain if work.training else 0, train_checkpointed if work.training else 0,
                      peak, free_bytes, null)


def plan_from_config(name: str, trust_remote_code: bool, device_name: str, dtype_choice: DTypeLike, quantize: Quantize,
                     examples: Sequence[Example], template: Template, prompt_len: int, batch_size: int, *,
                     training: bool, gradient_checkpointing: bool, metric_after_pass: bool, null_permutations: int = 0,
                     instruction_cache: int = TrainConfig.instruction_cache_bytes,
                     folds: bool = False, covariates: int = 0, probe_examples: int = 0, train_examples: int = 0,
                     neuron_module: str = "", revision: str = "") -> tuple[MemoryPlan, Workload]:
    """The plan of a run on model `name`: its config and tokenizer are read (no weights), the examples
    tokenized for the longest sequence and the scored tail (right-padded batches: T - shortest prefix + 1).
    A model that is no decoder-only causal LM is refused here (skn.models.model.refuse_non_causal); one that cannot
    be built on the meta device raises `PlanUnavailable`."""
    from transformers import AutoConfig, AutoTokenizer

    device = pick_device(device_name)
    dtype = pick_dtype(dtype_choice, device)
    require(quantize, device)
    gguf = find_gguf(name)  # a GGUF file carries its config and tokenizer: read them from it
    source, extra = name, ({"revision": revision} if revision else dict[str, str]())  # a hub model's branch, tag or commit
    if gguf is not None:
        require_gguf_support()
        source, extra = str(gguf.folder), {"gguf_file": gguf.name}
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code, **extra)
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code, **extra)
    except Exception as err:  # transformers raises OSError, ValueError, ... for unreadable models
        raise ModelError(f"cannot load the config or tokenizer of '{name}': {err}") from None
    refuse_non_causal(name, config, registered=gguf is None)
    rows = encode_all(tokenizer, examples, template, 0, prompt_len)
    if not rows:
        raise UsageError("no examples to plan the memory of")
    lengths = [len(r.instruction) + prompt_len + len(r.completion) for r in rows]
    prefix = min(len(r.instruction) + prompt_len for r in rows)
    work = Workload(batch_size=batch_size, seq_len=max(lengths), scored_len=max(lengths) - prefix + 1,
                    prompt_len=prompt_len, training=training, gradient_checkpointing=gradient_checkpointing,
                    instruction_cache=instruction_cache,
                    metric_after_pass=metric_after_pass, null_permutations=null_permutations, folds=folds,
                    covariates=covariates, probe_examples=probe_examples, train_examples=train_examples)
    shape = model_shape(config, neuron_module, trust_remote_code)
    return plan(shape, work, dtype, quantize, device, free_memory(device)), work


def free_memory(device: torch.device) -> int | None:
    """Free bytes on the device: CUDA's own count, /proc/meminfo's MemAvailable on a CPU, else unknown."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "cpu":
        meminfo = Path("/proc/meminfo")
        if meminfo.is_file():
            for line in meminfo.read_text(encoding="utf-8").splitlines():
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    return None


def null_advice(memory: MemoryPlan, work: Workload, free: int) -> str:
    """`--null` with fewer permutations: how many would fit, where the rest of the plan fits at all (the
    null's bytes grow in proportion to R)."""
    now = work.null_permutations
    room = free - (memory.peak_bytes - int(FACTOR * memory.null_bytes))
    fitting = int(now * room / (FACTOR * memory.null_bytes)) if room > 0 and memory.null_bytes else 0
    hint = f"; about {fitting} would fit" if 0 < fitting < now else ""
    return f"fewer permutations in --null (now {now}, {gib(memory.null_bytes)}{hint})"


def advice(memory: MemoryPlan, work: Workload) -> str:
    """What would fit, when the plan does not: the cheapest changes first, and the permutation null first of
    all when it takes most of the memory."""
    if memory.fits or memory.free_bytes is None:
        return ""
    free = memory.free_bytes
    rest = memory.peak_bytes - max(memory.train_bytes, memory.probe_bytes)
    ideas: list[str] = []
    null_dominates = memory.null_bytes * 2 > memory.peak_bytes
    if work.null_permutations and null_dominates:
        ideas.append(null_advice(memory, work, free))
    if work.training and not work.gradient_checkpointing and rest + max(memory.train_checkpointed_bytes, memory.probe_bytes) <= free:
        ideas.append("--gradient-checkpointing")
    batch = max(work.probe_batch, work.train_batch if work.training else 0)
    if batch > 1:
        ideas.append(f"a smaller --batch-size (now {batch})")
    if work.null_permutations and not null_dominates:
        ideas.append(null_advice(memory, work, free))
    if memory.dtype == "float32":
        ideas.append("--dtype bfloat16 (half the weights)")
    if memory.quantize == Quantize.NONE.value:
        ideas.append("--quantize 8bit or 4bit (CUDA, bitsandbytes)")
    ideas.append("a device map with CPU offload")
    return (f"the plan needs {gib(memory.peak_bytes)} but {memory.device} has {gib(free)} free; "
            f"try {', '.join(ideas)}")


def check_fits(memory: MemoryPlan, work: Workload) -> None:
    """On CUDA a run that will not fit stops here, before it loads a weight, saying what would fit. On a CPU
    (swap, memory-mapped weights) so does one that needs far more than the memory available
    (`CPU_REFUSE_RATIO`, `CPU_REFUSE_SLACK`); a smaller overshoot is only a warning, given by the caller."""
    text = advice(memory, work)
    if not text:
        return
    if memory.device.startswith("cuda"):
        raise UsageError(text)
    if memory.device == "cpu" and memory.free_bytes is not None and \
            memory.peak_bytes > CPU_REFUSE_RATIO * memory.free_bytes + CPU_REFUSE_SLACK:
        raise UsageError(f"{text} (a CPU run needing over {CPU_REFUSE_RATIO}x the available memory is refused)")


__all__ = ["CPU_REFUSE_RATIO", "CPU_REFUSE_SLACK", "FACTOR", "MemoryPlan", "ModelShape", "PlanUnavailable", "Workload",
           "advice", "check_fits", "free_memory", "model_shape", "null_advice", "plan", "plan_from_config"]
