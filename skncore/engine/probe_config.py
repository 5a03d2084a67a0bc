"""How to probe: `ProbeConfig`, every field checked where the config is made, below the engine that runs it.

The probe pass, the API and the run import this module; it imports none of them (only the statistics'
own small configs: the null's, the holdout's plan, the covariates' names). `skn.engine.run.probe_config_for`
resolves a request's config as a run does (the data's seed and template, the training batch).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from skn.statistics.backend import Backend
from skn.errors import UsageError
from skn.statistics.folds import HoldoutPlan, plan_holdout
from skn.inputs.layout import Template
from skn.statistics.null import NullConfig, check_null_config
from skn.statistics.covariates import parse_controls
from skn.ranking.rank import Reduce

GIB = 1 << 30
DEFAULT_STORE_BYTES = 8 * GIB


class ExemplarsPass(Enum):
    """Where the top neurons' activations come from."""

    AUTO = "auto"  # the activation store, a second pass only for neurons the store could not keep
    ALWAYS = "always"  # a second pass for every top neuron (skn before the store)


def check_store_budget(budget: int) -> None:
    if budget < 0:
        raise UsageError(f"--exemplar-store must not be negative, got {budget} bytes")



class Score(Enum):
    """What ranks the neurons: Pearson r with the metric, or Wang et al.'s predictivity (binary metrics)."""

    PEARSON = "pearson"
    PREDICTIVITY = "predictivity"


@dataclass(frozen=True)
class ProbeConfig:
    """How to probe; each field is checked where the config is made."""

    # skn.run_probe probes with the training batch (TrainRequest.batch_size: one --batch-size for both)
    batch_size: int = field(default=8, metadata={"help": "Examples per batch (training and probing)."})
    top_k: int = field(default=10, metadata={"help": "Neurons to keep."})
    n_exemplars: int = field(default=5, metadata={"help": "Most and least activating examples per neuron."})
    reduce: Reduce = field(default=Reduce.ABS, metadata={"help": "abs: r at argmax_k |r| (sign kept); max: the paper's max_k r."})
    backend: Backend = field(default=Backend.AUTO, metadata={"help": "Statistics update: auto = Triton on CUDA, torch elsewhere."})
    template: Template = Template.AUTO
    holdout: float | None = field(default=None, metadata={"help": (
        "Share of the validation set held out to confirm the ranking (0 = rank on all examples) "
        "[default: 0.5 once both folds hold 100 examples, else off].")})
    holdout_seed: int = 0  # seeds the fold assignment; skn.run_probe sets it from the data's seed (--seed)
    null: NullConfig = NullConfig()  # the permutation null (skn.statistics.null): R = null.permutations, 0 = off
    score: Score = field(default=Score.PEARSON, metadata={"help": (
        "Rank by Pearson r, or by Wang et al.'s predictivity (binary metrics; needs training examples; "
        "ranks on all validation examples: no holdout).")})
    fused_mlp: bool = field(default=False, metadata={"help": (
        "SiLU-gated FFNs: skn's own MLP forward, statistics from gate and up (same numbers; others use the plain path).")})
    checkpoint_every: int = field(default=0, metadata={"help": (
        "Save the probe pass's state to the run directory every N batches (0 = never); --resume continues it.")})
    exemplars_pass: ExemplarsPass = field(default=ExemplarsPass.AUTO, metadata={"help": (
        "Where the top neurons' activations come from: auto = stored during the one pass (a second pass only for "
        "layers over --exemplar-store); always = a second pass.")})
    exemplar_store: int = field(default=DEFAULT_STORE_BYTES, metadata={"help": (
        "Bytes of scratch disk (in TMPDIR) for the activation store: N x layers x P x neurons x itemsize; "
        "over it the deepest layers that fit are kept.")})
    control: tuple[str, ...] = field(default=(), metadata={"help": (
        "Rank by the partial r given these covariates: numeric fields, FIELD==VALUE, instruction_tokens, "
        "completion_tokens (comma-separated or repeated; the null permutes the metric's residual on them).")})

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise UsageError(f"--top-k must be at least 1, got {self.top_k}")
        if self.batch_size < 1:
            raise UsageError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.n_exemplars < 0:
            raise UsageError(f"--exemplars must not be negative, got {self.n_exemplars}")
        if self.checkpoint_every < 0:
            raise UsageError(f"--checkpoint-every must not be negative, got {self.checkpoint_every}")
        check_null_config(self.null)
        check_store_budget(self.exemplar_store)
        if self.control:
            parse_controls(self.control)  # a bad name fails where the config is made
            if self.score is Score.PREDICTIVITY:
                raise UsageError("--control ranks by the partial r; it does not apply to --score predictivity")
        if self.score is Score.PREDICTIVITY and self.holdout is not None and self.holdout != 0.0:
            raise UsageError(f"--holdout {self.holdout:g} does not apply to --score predictivity, which ranks on all "
                             "validation examples: drop --holdout, or rank by --score pearson")


def holdout_plan(config: ProbeConfig, n: int) -> HoldoutPlan:
    """The holdout a probe of `n` examples runs: --holdout's (skn.statistics.folds.plan_holdout), or none with --score
    predictivity, which ranks on all examples (a --holdout F with it is refused where the config is made)."""
    if config.score is Score.PREDICTIVITY:
        return HoldoutPlan(0.0, f"holdout off: --score predictivity ranks the neurons on all {n} validation examples")
    return plan_holdout(config.holdout, n)
