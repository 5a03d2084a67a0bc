"""The family-wise permutation null as a feature: its statistic (skn.statistics.null.NullAccumulator, fed the
selection fold only when a holdout ranks), its section (skn.statistics.null_verdict.NullResult), run.json's
"null" (what it concluded, and how many neurons pass its threshold), the columns p_adjusted, p_cell and
significant, and the tensors null_max_abs_r, null_threshold and null_alpha."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from skn.errors import InternalError, RunDirError
from skn.features.feature import Cell, PassSetup, RankedPass, RunFiles
from skn.files.rundir import NEURONS_JSON, NULL_COLUMNS, STATS_FILE, json_safe
from skn.ranking.holdout import ranked_passing
from skn.statistics.null import NullAccumulator, PermutationMode, SelectedRows
from skn.statistics.null_verdict import NullResult, null_result
from skn.statistics.scratch import ROW_BUFFER_BYTES
from skn.statistics.statistic import Statistic

if TYPE_CHECKING:
    from skn.files.result import ProbeResult


def null_summary(null: NullResult | None) -> dict[str, object] | None:
    """run.json's "null" without its passing counts: what the permutation null concluded (None: it was off)."""
    if null is None:
        return None
    return {
        "permutations": null.permutations,
        "mode": null.mode.value,
        "alpha": null.alpha,
        "threshold": null.threshold if math.isfinite(null.threshold) else None,
        "n_significant": null.n_significant,
        "top_k": len(null.significant),
    }


@dataclass(frozen=True)
class NullFeature:
    """--null R (R > 0): see the module docstring."""

    name: str = "null"
    columns: tuple[str, ...] = NULL_COLUMNS

    def statistics(self, setup: PassSetup) -> tuple[Statistic, ...]:
        config, sites, device = setup.config, setup.loaded.sites, setup.loaded.device
        if config.null.permutations <= 0:
            return ()
        # on a CPU the null collects rows before each product (skn.statistics.null.buffer_rows); a GPU's memory needs no buffer
        buffer = ROW_BUFFER_BYTES if device.type == "cpu" else 0
        null = NullAccumulator(sites.num_layers, setup.prompt_len, sites.width, config.null, device,
                               setup.ranked_controls, buffer)
        # with a holdout the null is that of the selection fold, which ranks the neurons
        return (SelectedRows(null, ~setup.confirm),) if setup.confirm is not None else (null,)

    def conclude(self, setup: PassSetup, ranked: RankedPass, fed: tuple[Statistic, ...]) -> NullResult | None:
        if not fed:
            return None
        null = fed[0].inner if isinstance(fed[0], SelectedRows) else fed[0]
        if not isinstance(null, NullAccumulator):
            raise InternalError(f"the null feature was fed a {type(null).__name__}")
        covariates = ranked.covariates.ranked if ranked.covariates is not None else None
        return null_result(null.snapshot(), ranked.ranked_stats, ranked.neurons, setup.config.reduce,
                           setup.config.null.alpha, covariates)

    def summary(self, setup: PassSetup, ranked: RankedPass, section: NullResult | None) -> tuple[tuple[str, object], ...]:
        summary = null_summary(section)
        if section is None or summary is None:
            return ((self.name, None),)
        # how many neurons (each at its best position) pass the threshold, on the r they were ranked on
        passing = ranked_passing(ranked.corr, ranked.holdout, ranked.stats.count, setup.config.reduce, section)
        return ((self.name, {**summary, "passing": passing.to_json()}),)

    def cells(self, section: NullResult, row: int) -> tuple[Cell, ...]:
        return json_safe(section.p_adjusted[row]), json_safe(section.p_cell[row]), section.significant[row]

    def tensors(self, section: NullResult) -> dict[str, Tensor]:
        return {
            "null_max_abs_r": section.max_abs_r.to(torch.float64),
            "null_threshold": torch.tensor(section.threshold, dtype=torch.float64),
            "null_alpha": torch.tensor(section.alpha, dtype=torch.float64),
        }

    def in_file_order(self, section: NullResult, back: Sequence[int]) -> NullResult:
        return section

    def write(self, directory: Path, run: ProbeResult, section: NullResult, metadata: Mapping[str, str]) -> None:
        return None

    def read(self, files: RunFiles) -> NullResult | None:
        """The maxima and threshold from stats.safetensors, the per-neuron p-values from neurons.json, the
        scheme from run.json."""
        tensors, directory = files.tensors, files.directory
        if "null_max_abs_r" not in tensors:
            return None
        if "null_threshold" not in tensors or "null_alpha" not in tensors:
            raise RunDirError(f"{directory / STATS_FILE}: null_max_abs_r without null_threshold and null_alpha")
        summary = files.info.get(self.name)
        mode_text = summary.get("mode") if isinstance(summary, Mapping) else None
        try:
            mode = PermutationMode(mode_text) if mode_text is not None else PermutationMode.WHOLE_SET
            p_adjusted, p_cell, significant = [], [], []
            for record in files.neurons:
                if not isinstance(record, Mapping):
                    raise TypeError("not an object")
                p_adjusted.append(math.nan if record["p_adjusted"] is None else float(record["p_adjusted"]))
                p_cell.append(math.nan if record["p_cell"] is None else float(record["p_cell"]))
                significant.append(bool(record["significant"]))
        except (KeyError, TypeError, ValueError) as err:
            raise RunDirError(f"{directory / NEURONS_JSON}: the run has a null but a neuron record lacks its p-values "
                              f"({err})") from None
        return NullResult(mode, float(tensors["null_alpha"]), tensors["null_max_abs_r"].to(torch.float64),
                          float(tensors["null_threshold"]), tuple(p_adjusted), tuple(p_cell), tuple(significant))


__all__ = ["NullFeature", "null_summary"]
