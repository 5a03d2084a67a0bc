"""The one protocol of a probe's optional parts: each owns its statistic, its result section, its run.json
summary and its files, and `skn.features.registry.FEATURES` lists them.

A probe (skn.engine.api) runs in stages, and a feature takes part in each through one method:

    statistics(setup)                 before the pass: the statistics it streams (skn.statistics.statistic)
    conclude(setup, ranked, fed)      after the ranking: its result section (None: off in this run), from the
                                      statistics it was fed (`fed`, those `statistics` returned) and the ranking
    summary(setup, ranked, section)   run.json's entries it writes (key, value), e.g. ("null", {...})
    columns / cells(section, row)     the columns it adds to neurons.json and neurons.csv, and one neuron's values
    tensors(section)                  the tensors it adds to stats.safetensors
    in_file_order(section, back)      the section with its per-example parts in the file's order (the pass runs
                                      in its own order: skn.inputs.example_order); most sections have none
    write(directory, run, section)    files of its own beside the run's (most features have none)
    read(files)                       its section back from a run directory (None: the run had none)

`ProbeResult.sections` holds the sections by feature name; the typed properties (`result.null`,
`result.holdout`, ...) read them. The pass, its checkpoint, the out-of-memory retry and the merge across
ranks see only `Statistic`s, so a new feature is one module here and one line in the registry.

The holdout, the covariates of --control and predictivity also decide how the neurons are ranked; the
ranking step (skn.engine.rank_pass) reads their plans and statistics, and each still owns its section,
summary and files here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from torch import Tensor

from skn.engine.probe_config import ProbeConfig
from skn.inputs.data import Example
from skn.inputs.layout import Encoded
from skn.inputs.metrics import MetricSpec
from skn.models.model import LoadedModel
from skn.ranking.holdout import HoldoutResult
from skn.ranking.rank import Neuron
from skn.statistics.folds import HoldoutPlan
from skn.statistics.partial import CovariateStats, FoldCovariates
from skn.statistics.predictivity import PredictivityCounts
from skn.statistics.statistic import Statistic
from skn.statistics.stats import PearsonStats

if TYPE_CHECKING:
    from skn.files.result import ProbeResult

Cell = float | bool | None
"""One value of a neuron's record: a number (NaN allowed), a yes/no, or none (written empty / null)."""


@dataclass(frozen=True)
class Controls:
    """The covariates of --control: their names and values [N, q] in pass order (none: names () and values None)."""

    names: tuple[str, ...] = ()
    values: Tensor | None = None


@dataclass(frozen=True)
class PassSetup:
    """What every feature may read before the pass: the model, the prompt, the examples in pass order, their
    encoded rows, the metric, the config, the holdout's plan and fold mask ([N] bool, True = confirmation
    fold; None without a holdout), the covariates, and the metric's values where they are known before the
    pass (computed once per probe)."""

    loaded: LoadedModel
    prompt: Tensor
    examples: tuple[Example, ...]
    rows: tuple[Encoded, ...]
    spec: MetricSpec
    config: ProbeConfig
    plan: HoldoutPlan
    confirm: Tensor | None
    controls: Controls
    known: Tensor | None = None  # [N] float64: the metric when it is known before the pass (a label, a field)

    @property
    def prompt_len(self) -> int:
        return int(self.prompt.shape[0])

    @property
    def ranked_controls(self) -> Tensor | None:
        """The covariates of the examples that rank the neurons (the selection fold's with a holdout)."""
        z, confirm = self.controls.values, self.confirm
        return z if z is None or confirm is None else z[~confirm]


@dataclass(frozen=True)
class Covariates:
    """The covariate co-moments after the pass: over all examples (`full`), over the examples that ranked
    (`ranked`), and per fold with a holdout (`folds`, else None)."""

    full: CovariateStats
    ranked: CovariateStats
    folds: FoldCovariates | None


@dataclass(frozen=True)
class RankedPass:
    """The ranking step's outcome (skn.engine.rank_pass): the corr the neurons were scored on ([L, P, m]; partial
    r with --control), the top neurons, the moments over all examples and over those that ranked, the metric
    [N] float64, and what the ranking features produced (None where off)."""

    corr: Tensor
    neurons: tuple[Neuron, ...]
    stats: PearsonStats
    ranked_stats: PearsonStats
    metric: Tensor
    holdout: HoldoutResult | None
    predictivity: PredictivityCounts | None
    covariates: Covariates | None


@dataclass(frozen=True)
class RunFiles:
    """A run directory as a feature reads its section back: the directory, stats.safetensors' tensors,
    neurons.json's records and run.json's entries beyond the known fields."""

    directory: Path
    tensors: Mapping[str, Tensor]
    neurons: Sequence[object]
    info: Mapping[str, object]


def number_or_nan(value: object) -> float:
    """A number read from a run's JSON; anything else (null, text, a yes/no) is NaN."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


S = TypeVar("S")


class Feature(Protocol, Generic[S]):
    """An optional part of a probe; see the module docstring."""

    @property
    def name(self) -> str:
        """Its key in `ProbeResult.sections` (and, by convention, in run.json)."""
        ...

    @property
    def columns(self) -> tuple[str, ...]:
        """The columns it adds to neurons.json and neurons.csv when its section is there."""
        ...

    def statistics(self, setup: PassSetup) -> tuple[Statistic, ...]: ...

    def conclude(self, setup: PassSetup, ranked: RankedPass, fed: tuple[Statistic, ...]) -> S | None: ...

    def summary(self, setup: PassSetup, ranked: RankedPass, section: S | None) -> tuple[tuple[str, object], ...]: ...

    def cells(self, section: S, row: int) -> tuple[Cell, ...]: ...

    def tensors(self, section: S) -> dict[str, Tensor]: ...

    def in_file_order(self, section: S, back: Sequence[int]) -> S: ...

    def write(self, directory: Path, run: ProbeResult, section: S, metadata: Mapping[str, str]) -> None: ...

    def read(self, files: RunFiles) -> S | None: ...


__all__ = ["Cell", "Controls", "Covariates", "Feature", "PassSetup", "RankedPass", "RunFiles", "number_or_nan"]
