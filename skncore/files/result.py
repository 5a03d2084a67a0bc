"""What a probe produced: one result type, and `run.json` as a typed record.

`ProbeResult` is returned by `skn.engine.probe`, by `skn.run_probe` (the whole `skn probe`) and by
`skn.read_probe_run` (a run directory read back): the same fields whether the run was just computed or
read from disk. `RunInfo` is the content of `run.json`; keys it does not know (written by a newer skn,
or added by a capability of its own) are kept in `extra` and written back unchanged.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from torch import Tensor

from skn.inputs.data import Example
from skn.errors import InternalError, RunDirError
from skn.inputs.groups import GroupSummaries
from skn.ranking.holdout import HoldoutResult, ranked_passing
from skn.statistics.null_verdict import NullResult
from skn.statistics.passing import PassingCounts
from skn.statistics.partial import PartialResult
from skn.statistics.predictivity import PredictivityCounts
from skn.ranking.rank import Exemplars, Neuron, Reduce, exemplars
from skn.views.result_view import html_table, neuron_frame, short_repr
from skn.statistics.stats import PearsonStats


Section = TypeVar("Section")


def with_section(run: ProbeResult, name: str, section: object | None) -> ProbeResult:
    """`run` with feature `name`'s section replaced (None: removed)."""
    sections = {k: v for k, v in run.sections.items() if k != name}
    if section is not None:
        sections[name] = section
    return replace(run, sections=sections)


@dataclass(frozen=True)
class ProbeConfigRecord:
    """How the probe ran, as recorded in run.json (`probe_config`)."""

    batch_size: int
    top_k: int
    n_exemplars: int
    reduce: str
    backend: str
    template: str
    holdout: float | None = None  # the --holdout asked for; None = the default (see skn.statistics.folds.plan_holdout)
    score: str = "pearson"  # what ranked the neurons: pearson or predictivity
    null_permutations: int = 0  # R of the permutation null (0 = off)
    alpha: float = 0.05
    null_seed: int = 0


@dataclass(frozen=True)
class TrainPoint:
    """One optimiser step of the training curve; `val_loss` is null between evaluations."""

    step: int
    train_loss: float
    val_loss: float | None


@dataclass(frozen=True)
class RunInfo:
    """The content of run.json: everything needed to know what a run did."""

    model: str
    metric: str
    n_val: int
    layers: int
    width: int
    top_k: int
    device: str = ""
    dtype: str = ""
    neuron_module: str = ""
    weights: str = ""  # how the weights were made where that is not plain (a dequantized GGUF file)
    data: str = ""
    val_data: str = ""
    n_train: int = 0
    prompt: str = ""
    probe_config: ProbeConfigRecord | None = None
    seed: int = 0
    versions: Mapping[str, str] = field(default_factory=dict)
    train_config: Mapping[str, object] | None = None  # TrainConfig's fields; init as its token text
    train_history: tuple[TrainPoint, ...] = ()
    train_best_val_loss: float | None = None
    train_best_step: int | None = None
    task: str = ""
    data_summary: str = ""
    group_by: tuple[str, ...] = ()
    timings: Mapping[str, float] = field(default_factory=dict)
    extra: Mapping[str, object] = field(default_factory=dict)
    run_id: str = ""  # drawn once per run (`new_run_id`) and carried by every file; "" for a run of an older skn

    @property
    def reduce(self) -> Reduce:
        return Reduce(self.probe_config.reduce) if self.probe_config is not None else Reduce.ABS


@dataclass(frozen=True, repr=False)
class ProbeResult:
    """A probe's outcome: the statistics, the ranking, the top neurons' activations and what ran.

    `repr` is a one-line summary; in Jupyter it shows as a table of the top neurons with their exemplars
    (skn.views.result_view); `to_frame()` gives that table as a pandas DataFrame."""

    neurons: tuple[Neuron, ...]
    corr: Tensor  # [L, P, m] float32, NaN where undefined
    stats: PearsonStats
    top_activations: Tensor  # [K, N] float32: each top neuron at its best position, neurons order
    metric: Tensor  # [N] float64, in example order
    examples: tuple[Example, ...]
    info: RunInfo
    groups: GroupSummaries | None = None  # with --group-by or a task
    # each feature's result section by its name (skn.features): read them with the properties below
    sections: Mapping[str, object] = field(default_factory=dict)

    def section(self, kind: type[Section]) -> Section | None:
        """The section of type `kind`, or None when its feature was off in this run."""
        found = [s for s in self.sections.values() if isinstance(s, kind)]
        if len(found) > 1:
            raise InternalError(f"a probe result with {len(found)} sections of type {kind.__name__}")
        return found[0] if found else None

    @property
    def holdout(self) -> HoldoutResult | None:
        """With a holdout: the folds and each top neuron's held-out r (`neurons` were ranked on its selection fold)."""
        return self.section(HoldoutResult)

    @property
    def predictivity(self) -> PredictivityCounts | None:
        """With --score predictivity (see skn.statistics.predictivity)."""
        return self.section(PredictivityCounts)

    @property
    def null(self) -> NullResult | None:
        """The family-wise permutation null (skn.statistics.null_verdict.NullResult): null maxima, threshold, and per
        neuron (in `neurons` order) p_adjusted, p_cell, significant; None when the null is off (--null 0)."""
        return self.section(NullResult)

    @property
    def partial(self) -> PartialResult | None:
        """With --control (skn.statistics.partial): the covariates, their r with the metric, and the raw r beside the
        partial r that ranked (`corr` and every neuron's r are then partial r)."""
        return self.section(PartialResult)

    @property
    def holdout_note(self) -> str:
        """What the holdout resolved to (its folds, or why it is off), as run.json's holdout.note says."""
        summary = self.info.extra.get("holdout")
        return str(summary.get("note", "")) if isinstance(summary, Mapping) else ""

    @property
    def ranked_corr(self) -> Tensor:
        """The corr [L, P, m] the neurons were ranked on (and the null computed on): the selection fold's
        with a holdout, else the full set's."""
        return self.holdout.corr_selection if self.holdout is not None else self.corr

    @property
    def passing(self) -> PassingCounts | None:
        """How many neurons (each at its best position) pass the null's family-wise threshold, per layer and
        in all, counted on the ranked fold's r (skn.statistics.passing); None when the null is off."""
        if self.null is None:
            return None
        return ranked_passing(self.corr, self.holdout, self.stats.count, self.info.reduce, self.null)

    def exemplars(self, n: int) -> tuple[Exemplars, ...]:
        """The n most and least activating examples of every top neuron."""
        return tuple(exemplars(self.top_activations[k], n) for k in range(len(self.neurons)))

    def __repr__(self) -> str:
        return short_repr(self)

    def _repr_html_(self) -> str:
        return html_table(self)

    def to_frame(self, exemplars: int = 3) -> Any:
        """A pandas DataFrame of the top neurons (needs `pip install 'skn[notebook]'`): rank, layer, neuron,
        position, r, p, significant, r_held_out, and the texts of the `exemplars` most and least activating
        examples (see skn.views.result_view.neuron_frame)."""
        return neuron_frame(self, exemplars)


# ---------------------------------------------------------------- run.json <-> RunInfo

_KNOWN = (
    "model", "metric", "data", "val_data", "n_train", "device", "dtype", "layers", "width", "neuron_module", "weights",
    "prompt", "probe_config", "seed", "versions", "train_config", "train_history", "train_best_val_loss",
    "train_best_step", "task", "data_summary", "group_by", "timings", "n_val", "top_k", "run_id",
)


def new_run_id() -> str:
    """A run's id: random, so that files of two runs never agree by chance (see skn.files.rundir)."""
    return uuid.uuid4().hex


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def info_to_json(info: RunInfo) -> dict[str, object]:
    """run.json's object: strict JSON (non-finite numbers become null)."""
    out: dict[str, object] = {
        "model": info.model,
        "metric": info.metric,
        "data": info.data,
        "val_data": info.val_data,
        "n_train": info.n_train,
        "device": info.device,
        "dtype": info.dtype,
        "layers": info.layers,
        "width": info.width,
        "neuron_module": info.neuron_module,
        "prompt": info.prompt,
    }
    if info.weights:
        out["weights"] = info.weights
    if info.probe_config is not None:
        p = info.probe_config
        out["probe_config"] = {"batch_size": p.batch_size, "top_k": p.top_k, "n_exemplars": p.n_exemplars,
                               "reduce": p.reduce, "backend": p.backend, "template": p.template,
                               "holdout": "auto" if p.holdout is None else p.holdout, "score": p.score,
                               "null_permutations": p.null_permutations, "alpha": p.alpha, "null_seed": p.null_seed}
    out["seed"] = info.seed
    out["versions"] = dict(info.versions)
    if info.train_config is not None:
        out["train_config"] = dict(info.train_config)
    if info.train_history:
        out["train_history"] = [
            {"step": h.step, "train_loss": _finite(h.train_loss), "val_loss": _finite(h.val_loss)} for h in info.train_history
        ]
    if info.train_best_step is not None:
        out["train_best_val_loss"] = _finite(info.train_best_val_loss)
        out["train_best_step"] = info.train_best_step
    if info.task:
        out["task"] = info.task
        out["data_summary"] = info.data_summary
    out["group_by"] = list(info.group_by)
    out.update(info.extra)
    out["timings"] = {k: _finite(v) for k, v in info.timings.items()}
    out["n_val"] = info.n_val
    out["top_k"] = info.top_k
    if info.run_id:
        out["run_id"] = info.run_id
    return out


class _Reader:
    """Typed access to run.json's fields, each failure a RunDirError naming the file and the key."""

    def __init__(self, record: Mapping[str, object], where: str) -> None:
        self.record = record
        self.where = where

    def fail(self, key: str, expected: str) -> RunDirError:
        return RunDirError(f"{self.where}: '{key}' should be {expected}, got {self.record.get(key)!r}")

    def text(self, key: str) -> str:
        value = self.record.get(key, "")
        if not isinstance(value, str):
            raise self.fail(key, "text")
        return value

    def integer(self, key: str, default: int = 0) -> int:
        value = self.record.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.fail(key, "an integer")
        return value

    def number(self, key: str) -> float | None:
        value = self.record.get(key)
        if value is None:
            return None
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise self.fail(key, "a number or null")
        return float(value)

    def mapping(self, key: str) -> Mapping[str, object] | None:
        value = self.record.get(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self.fail(key, "an object")
        return value


def info_from_json(value: object, where: str) -> RunInfo:
    """Read run.json's object back; a field of the wrong type is a RunDirError."""
    if not isinstance(value, dict):
        raise RunDirError(f"{where}: expected a JSON object")
    read = _Reader(value, where)
    probe_config = None
    raw_probe = read.mapping("probe_config")
    if raw_probe is not None:
        p = _Reader(raw_probe, f"{where}: probe_config")
        holdout = raw_probe.get("holdout", "auto")
        probe_config = ProbeConfigRecord(p.integer("batch_size"), p.integer("top_k"), p.integer("n_exemplars"),
                                     p.text("reduce") or "abs", p.text("backend"), p.text("template"),
                                     None if holdout == "auto" else p.number("holdout"), p.text("score") or "pearson",
                                     p.integer("null_permutations"), p.number("alpha") or 0.05, p.integer("null_seed"))
        try:
            Reduce(probe_config.reduce)
        except ValueError:
            raise p.fail("reduce", "one of " + ", ".join(r.value for r in Reduce)) from None
    history_raw = value.get("train_history", [])
    if not isinstance(history_raw, list):
        raise read.fail("train_history", "a list")
    history = []
    for i, point in enumerate(history_raw):
        if not isinstance(point, dict):
            raise RunDirError(f"{where}: train_history[{i}] should be an object")
        h = _Reader(point, f"{where}: train_history[{i}]")
        history.append(TrainPoint(h.integer("step"), h.number("train_loss") or math.nan, h.number("val_loss")))
    versions = read.mapping("versions") or {}
    timings = read.mapping("timings") or {}
    group_by = value.get("group_by", [])
    if not isinstance(group_by, list) or not all(isinstance(g, str) for g in group_by):
        raise read.fail("group_by", "a list of field names")
    best_step = value.get("train_best_step")
    return RunInfo(
        model=read.text("model"),
        metric=read.text("metric"),
        n_val=read.integer("n_val"),
        layers=read.integer("layers"),
        width=read.integer("width"),
        top_k=read.integer("top_k"),
        device=read.text("device"),
        dtype=read.text("dtype"),
        neuron_module=read.text("neuron_module"),
        weights=read.text("weights"),
        data=read.text("data"),
        val_data=read.text("val_data"),
        n_train=read.integer("n_train"),
        prompt=read.text("prompt"),
        probe_config=probe_config,
        seed=read.integer("seed"),
        versions={str(k): str(v) for k, v in versions.items()},
        train_config=read.mapping("train_config"),
        train_history=tuple(history),
        train_best_val_loss=read.number("train_best_val_loss"),
        train_best_step=None if best_step is None else read.integer("train_best_step"),
        task=read.text("task"),
        data_summary=read.text("data_summary"),
        group_by=tuple(group_by),
        timings={str(k): float(v) for k, v in timings.items() if isinstance(v, (int, float)) and not isinstance(v, bool)},
        extra={k: v for k, v in value.items() if k not in _KNOWN},
        run_id=read.text("run_id"),
    )
