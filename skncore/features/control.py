"""--control as a feature: the covariates' values (`control_values`, checked before any weight loads and again
with the model's tokenizer), its statistic (skn.statistics.covariate_moments.CovariateAccumulator: the neurons'
co-moments with the covariates, per fold), the covariate moments the ranking step ranks by the partial r with
(`covariates_after_pass`), its section (skn.statistics.partial.PartialResult), run.json's "control", the
column r_raw and the tensor corr_raw."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from skn.engine.encoding import encode
from skn.engine.probe_config import ProbeConfig, holdout_plan
from skn.errors import InternalError, RunDirError
from skn.features.feature import Cell, number_or_nan, Covariates, PassSetup, RankedPass, RunFiles
from skn.files.rundir import CONTROL_COLUMNS, STATS_FILE
from skn.inputs.data import Example
from skn.inputs.layout import Encoded
from skn.models.model import LoadedModel
from skn.statistics.covariate_moments import CovariateAccumulator
from skn.statistics.covariates import check_controls, covariate_values, parse_controls
from skn.statistics.folds import FoldStats, assign_folds
from skn.statistics.partial import (FoldCovariates, PartialResult, check_metric_residual, covariate_r, covariate_stats,
                                    merge_covariates)
from skn.statistics.statistic import Statistic
from skn.statistics.stats import correlation

if TYPE_CHECKING:
    from skn.files.result import ProbeResult

CONTROL = "control"  # the feature's name: its key in ProbeResult.sections and in run.json


def control_values(loaded: LoadedModel | None, examples: Sequence[Example], config: ProbeConfig, prompt_len: int,
                   rows: Sequence[Encoded] | None = None) -> Tensor | None:
    """[N, q] the covariates of `config.control` on `examples` (None without), checked: none constant, none
    collinear with the others, on all examples and on each holdout fold. The token counts need the model's
    tokenizer (`loaded`) or the encoded `rows`."""
    covariates = parse_controls(config.control)
    if not covariates:
        return None
    if rows is None and any(c.needs_tokens for c in covariates):
        if loaded is None:
            return None  # checked again once the model is loaded
        rows = encode(loaded, examples, config.template, prompt_len)
    z = covariate_values(covariates, examples, rows)
    plan = holdout_plan(config, len(examples))
    check_controls([c.text for c in covariates], z, assign_folds(examples, plan.fraction, config.holdout_seed) if plan.on else None)
    return z


def check_residuals(setup: PassSetup, metric: Tensor) -> None:
    """The metric must keep some spread once the covariates are regressed out: on all examples and on each fold
    (a MetricError otherwise)."""
    names, z, confirm = setup.controls.names, setup.controls.values, setup.confirm
    if z is None:
        return
    check_metric_residual(setup.spec.text, names, z, metric)
    if confirm is not None:
        check_metric_residual(setup.spec.text, names, z[~confirm], metric[~confirm], "selection fold")
        check_metric_residual(setup.spec.text, names, z[confirm], metric[confirm], "confirmation fold")


def covariates_after_pass(setup: PassSetup, fed: tuple[Statistic, ...], metric: Tensor,
                          folds: FoldStats | None) -> Covariates | None:
    """The covariate moments the ranking step ranks by (None without --control): over all examples, over those that
    rank (the selection fold with a holdout), and per fold."""
    names, z, confirm = setup.controls.names, setup.controls.values, setup.confirm
    if z is None or not fed:
        return None
    comoments = fed[0]
    if not isinstance(comoments, CovariateAccumulator):
        raise InternalError(f"the control feature was fed a {type(comoments).__name__}")
    if confirm is not None and folds is not None:
        selection = covariate_stats(names, z[~confirm], metric[~confirm], comoments.fold_xz(0))
        confirmation = covariate_stats(names, z[confirm], metric[confirm], comoments.fold_xz(1))
        full = merge_covariates(selection, confirmation, folds.selection, folds.confirmation, z, metric)
        return Covariates(full, selection, FoldCovariates(selection, confirmation, full))
    full = covariate_stats(names, z, metric, comoments.fold_xz(0))
    return Covariates(full, full, None)


@dataclass(frozen=True)
class ControlFeature:
    """--control COVARIATES: see the module docstring."""

    name: str = CONTROL
    columns: tuple[str, ...] = CONTROL_COLUMNS

    def statistics(self, setup: PassSetup) -> tuple[Statistic, ...]:
        z, confirm, sites = setup.controls.values, setup.confirm, setup.loaded.sites
        if z is None:
            return ()
        folds = confirm.long() if confirm is not None else torch.zeros(len(setup.examples), dtype=torch.long)
        return (CovariateAccumulator(z, folds, 2 if confirm is not None else 1, sites.num_layers, setup.prompt_len,
                                     sites.width, setup.loaded.device),)

    def conclude(self, setup: PassSetup, ranked: RankedPass, fed: tuple[Statistic, ...]) -> PartialResult | None:
        if ranked.covariates is None:
            return None
        raw = correlation(ranked.ranked_stats)
        return PartialResult(setup.controls.names, covariate_r(ranked.covariates.full, ranked.stats.m2_y), raw,
                             tuple(float(raw[n.layer, n.position, n.index]) for n in ranked.neurons))

    def summary(self, setup: PassSetup, ranked: RankedPass, section: PartialResult | None) -> tuple[tuple[str, object], ...]:
        return ((self.name, section.summary()),) if section is not None else ()

    def cells(self, section: PartialResult, row: int) -> tuple[Cell, ...]:
        return (section.raw_r[row],)

    def tensors(self, section: PartialResult) -> dict[str, Tensor]:
        return {"corr_raw": section.raw_corr.to(torch.float32)}

    def in_file_order(self, section: PartialResult, back: Sequence[int]) -> PartialResult:
        return section

    def write(self, directory: Path, run: ProbeResult, section: PartialResult, metadata: Mapping[str, str]) -> None:
        return None

    def read(self, files: RunFiles) -> PartialResult | None:
        """`corr_raw` (stats.safetensors), each neuron's r_raw, run.json's `control`."""
        tensors, directory = files.tensors, files.directory
        if "corr_raw" not in tensors:
            return None
        control = files.info.get(self.name)
        entries = control.get("covariates") if isinstance(control, Mapping) else None
        try:
            if not isinstance(entries, list):
                raise TypeError("run.json has no 'control' covariates")
            names = tuple(str(e["name"]) for e in entries)
            metric_r = tuple(number_or_nan(e.get("r_metric")) for e in entries)
            raw_r = tuple(math.nan if n["r_raw"] is None else float(n["r_raw"]) for n in files.neurons)  # type: ignore[index]
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise RunDirError(f"{directory}: corr_raw without the covariates in run.json or r_raw in neurons.json ({err})") from None
        if tuple(tensors["corr_raw"].shape) != tuple(tensors["corr"].shape):
            raise RunDirError(f"{directory / STATS_FILE}: 'corr_raw' is {tuple(tensors['corr_raw'].shape)}, "
                              f"'corr' is {tuple(tensors['corr'].shape)}")
        return PartialResult(names, metric_r, tensors["corr_raw"], raw_r)


__all__ = ["CONTROL", "ControlFeature", "check_residuals", "control_values", "covariates_after_pass"]
