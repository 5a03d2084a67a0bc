"""--score predictivity as a feature: its section (skn.statistics.predictivity.PredictivityCounts, from two
prompt-only passes the ranking step runs: skn.engine.rank_pass) and its own files, predictivity.safetensors
(`predictivity` [L, P, m] float32, `train_mean` float64, `above`, `above_pos` int64) and predictivity.json
(both scores of the top neurons, the rankings' agreement). It adds no column, tensor or run.json entry, and
a run read back has no section (its files are read on their own)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from skn.engine.probe_config import Score
from skn.features.feature import Cell, PassSetup, RankedPass, RunFiles
from skn.files.rundir import PREDICTIVITY_FILE, PREDICTIVITY_JSON, RUN_ID, write_json, write_tensors
from skn.statistics.predictivity import PredictivityCounts, predictivity_record
from skn.statistics.statistic import Statistic
from skn.version import __version__

if TYPE_CHECKING:
    from skn.files.result import ProbeResult


@dataclass(frozen=True)
class PredictivityFeature:
    """--score predictivity: see the module docstring."""

    name: str = "predictivity"
    columns: tuple[str, ...] = ()

    def statistics(self, setup: PassSetup) -> tuple[Statistic, ...]:
        return ()  # its counts come from passes of their own, after the statistics pass

    def conclude(self, setup: PassSetup, ranked: RankedPass, fed: tuple[Statistic, ...]) -> PredictivityCounts | None:
        return ranked.predictivity

    def summary(self, setup: PassSetup, ranked: RankedPass,
                section: PredictivityCounts | None) -> tuple[tuple[str, object], ...]:
        return ()

    def cells(self, section: PredictivityCounts, row: int) -> tuple[Cell, ...]:
        return ()

    def tensors(self, section: PredictivityCounts) -> dict[str, Tensor]:
        return {}

    def in_file_order(self, section: PredictivityCounts, back: Sequence[int]) -> PredictivityCounts:
        return section

    def write(self, directory: Path, run: ProbeResult, section: PredictivityCounts, metadata: Mapping[str, str]) -> None:
        own = {"model": run.info.model, "metric": run.info.metric, "skn_version": __version__, RUN_ID: run.info.run_id}
        write_tensors(directory / PREDICTIVITY_FILE, {"predictivity": section.predictivity().to(torch.float32),
                      "train_mean": section.train_mean, "above": section.above, "above_pos": section.above_pos}, own)
        write_json(directory / PREDICTIVITY_JSON, predictivity_record(section, run.corr, run.neurons, Score.PREDICTIVITY.value))

    def read(self, files: RunFiles) -> PredictivityCounts | None:
        return None


__all__ = ["PredictivityFeature"]
