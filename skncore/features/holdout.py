"""The holdout as a feature: its section (skn.ranking.holdout.HoldoutResult: the folds, their corr, each top
neuron's held-out r), run.json's "holdout" (its folds and replication, or why it is off), the columns
r_held_out .. r_full, and the tensors confirm, selection_* and confirmation_* (each fold's moments) and
corr_selection, corr_confirmation. Its statistic is the pass's moments, kept per fold (skn.statistics.folds);
the ranking step (skn.engine.rank_pass) ranks on the selection fold and concludes the section."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from skn.errors import RunDirError
from skn.features.feature import Cell, number_or_nan, PassSetup, RankedPass, RunFiles
from skn.files.rundir import FOLD_NAMES, HOLDOUT_COLUMNS, MOMENTS, NEURONS_JSON, STATS_FILE, moment_tensors, read_moments
from skn.ranking.holdout import HeldOutR, HoldoutResult
from skn.ranking.replication import ALPHA, Replication
from skn.statistics.folds import FoldStats
from skn.statistics.statistic import Statistic

if TYPE_CHECKING:
    from skn.files.result import ProbeResult


@dataclass(frozen=True)
class HoldoutFeature:
    """--holdout F: see the module docstring."""

    name: str = "holdout"
    columns: tuple[str, ...] = HOLDOUT_COLUMNS

    def statistics(self, setup: PassSetup) -> tuple[Statistic, ...]:
        return ()  # the pass's own moments, per fold (skn.engine.probe.statistics_pass with `confirm`)

    def conclude(self, setup: PassSetup, ranked: RankedPass, fed: tuple[Statistic, ...]) -> HoldoutResult | None:
        return ranked.holdout

    def summary(self, setup: PassSetup, ranked: RankedPass, section: HoldoutResult | None) -> tuple[tuple[str, object], ...]:
        if section is None:
            return ((self.name, {"fraction": 0.0, "note": setup.plan.note}),)
        return ((self.name, {**section.summary(), "note": setup.plan.note}),)

    def cells(self, section: HoldoutResult, row: int) -> tuple[Cell, ...]:
        h = section.per_neuron[row]
        return h.r_held_out, h.low, h.high, h.r_selection, h.r_full

    def tensors(self, section: HoldoutResult) -> dict[str, Tensor]:
        """`confirm` [N] uint8 (1 = confirmation fold), each fold's moments under `selection_` / `confirmation_`,
        and each fold's corr (`corr_selection`, `corr_confirmation`)."""
        tensors = {"confirm": section.folds.confirm.to(torch.uint8)}
        tensors.update(moment_tensors("selection_", section.folds.selection))
        tensors.update(moment_tensors("confirmation_", section.folds.confirmation))
        tensors["corr_selection"] = section.corr_selection.to(torch.float32)
        tensors["corr_confirmation"] = section.corr_confirmation.to(torch.float32)
        return tensors

    def in_file_order(self, section: HoldoutResult, back: Sequence[int]) -> HoldoutResult:
        return replace(section, folds=replace(section.folds, confirm=section.folds.confirm[list(back)]))

    def write(self, directory: Path, run: ProbeResult, section: HoldoutResult, metadata: Mapping[str, str]) -> None:
        return None

    def read(self, files: RunFiles) -> HoldoutResult | None:
        """stats.safetensors' fold tensors, neurons.json's held-out fields, run.json's summary."""
        tensors, directory = files.tensors, files.directory
        if "confirm" not in tensors:
            return None
        needed = {f"{fold}_{name}" for fold in FOLD_NAMES for name in MOMENTS} | {"corr_selection", "corr_confirmation"}
        missing = needed - set(tensors)
        if missing:
            raise RunDirError(f"{directory / STATS_FILE}: has a fold mask but lacks {', '.join(sorted(missing))}")
        try:
            per_neuron = tuple(
                HeldOutR(*(math.nan if n[name] is None else float(n[name]) for name in HOLDOUT_COLUMNS))  # type: ignore[index]
                for n in files.neurons
            )
        except (KeyError, TypeError, ValueError) as err:
            raise RunDirError(f"{directory / NEURONS_JSON}: a run with a holdout needs {', '.join(HOLDOUT_COLUMNS)} "
                              f"({err})") from None
        summary = files.info.get(self.name)
        summary = summary if isinstance(summary, Mapping) else {}
        rep = summary.get("replication")
        rep = rep if isinstance(rep, Mapping) else {}
        replication = Replication(
            top_k if isinstance(top_k := rep.get("top_k"), int) else len(per_neuron),
            number_or_nan(rep.get("selection_to_confirmation")),
            number_or_nan(rep.get("confirmation_to_selection")),
            number_or_nan(rep.get("rate")),
            number_or_nan(rep.get("alpha")) if "alpha" in rep else ALPHA,
        )
        folds = FoldStats(read_moments(tensors, "selection_"), read_moments(tensors, "confirmation_"),
                          tensors["confirm"].to(torch.bool))
        return HoldoutResult(
            fraction=number_or_nan(summary.get("fraction")),
            seed=int(summary["seed"]) if isinstance(summary.get("seed"), int) else 0,
            folds=folds,
            corr_selection=tensors["corr_selection"],
            corr_confirmation=tensors["corr_confirmation"],
            per_neuron=per_neuron,
            replication=replication,
        )


__all__ = ["HoldoutFeature"]
