"""A new statistic is one module and one registration (skn.features): the feature below, written here as a user
would write it, is fed by the pass, checkpointed and resumed with it, concluded after the ranking, summarised
in run.json, written into neurons.json, neurons.csv and stats.safetensors, and read back, with no edit to skn.

Its numbers are checked against an independent value: the per-cell mean activation is also the moments'
`mean_x` (Chan's streamed mean in the pass), here recomputed as a plain float64 sum."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch
from safetensors.torch import load_file
from torch import Tensor

from skn.engine.api import probe
from skn.engine.probe_config import ProbeConfig
from skn.engine.progress import ProgressSink, SilentProgress
from skn.features.feature import Cell, PassSetup, RankedPass, RunFiles
from skn.features.registry import FEATURES
from skn.files.probe_files import write_probe_run
from skn.files.probe_read import read_probe_run
from skn.statistics.null import NullConfig
from skn.statistics.statistic import Collective, Statistic
from skn.training.prompt import init_prompt

from helpers import Interrupted, StopAfter, length_examples, tiny_loaded

if TYPE_CHECKING:
    from skn.files.result import ProbeResult


class SumOfActivations:
    """A Statistic: the float64 sum of every cell's activation, and the examples seen."""

    def __init__(self, layers: int, positions: int, width: int) -> None:
        self.total = torch.zeros(layers, positions, width, dtype=torch.float64)
        self.count = torch.zeros((), dtype=torch.int64)
        self.batches = 0  # how many batches this object itself was fed (a resumed pass feeds fewer)

    def begin(self, count: int, known: Tensor | None) -> None:
        return None

    def add_layer(self, layer: int, first: int, acts: Tensor, y: Tensor) -> None:
        self.total[layer] += acts.to(torch.float64).sum(dim=0).cpu()

    def finish_batch(self, first: int, y: Tensor) -> None:
        self.count += int(y.shape[0])
        self.batches += 1

    def state(self) -> dict[str, Tensor]:
        return {"total": self.total.clone(), "count": self.count.clone()}

    def load_state(self, state: Mapping[str, Tensor]) -> None:
        self.total, self.count = state["total"].clone(), state["count"].clone()

    def merge(self, ranks: Collective) -> None:
        if ranks.active:
            ranks.sum_(self.total)
            ranks.sum_(self.count)


@dataclass(frozen=True)
class MeanActivation:
    """Each cell's mean activation [L, P, m]."""

    mean: Tensor
    at_neurons: tuple[float, ...]
    fed_batches: int = 0  # batches this run's statistic was fed itself (not counting a checkpoint's)


@dataclass(frozen=True)
class MeanActivationFeature:
    name: str = "mean_activation"
    columns: tuple[str, ...] = ("mean_activation",)

    def statistics(self, setup: PassSetup) -> tuple[Statistic, ...]:
        sites = setup.loaded.sites
        return (SumOfActivations(sites.num_layers, setup.prompt_len, sites.width),)

    def conclude(self, setup: PassSetup, ranked: RankedPass, fed: tuple[Statistic, ...]) -> MeanActivation | None:
        sums = fed[0]
        assert isinstance(sums, SumOfActivations)
        mean = sums.total / int(sums.count)
        return MeanActivation(mean, tuple(float(mean[n.layer, n.position, n.index]) for n in ranked.neurons), sums.batches)

    def summary(self, setup: PassSetup, ranked: RankedPass, section: MeanActivation | None) -> tuple[tuple[str, object], ...]:
        return ((self.name, {"cells": int(section.mean.numel()) if section is not None else 0}),)

    def cells(self, section: MeanActivation, row: int) -> tuple[Cell, ...]:
        return (section.at_neurons[row],)

    def tensors(self, section: MeanActivation) -> dict[str, Tensor]:
        return {"mean_activation": section.mean}

    def in_file_order(self, section: MeanActivation, back: Sequence[int]) -> MeanActivation:
        return section  # nothing per example

    def write(self, directory: Path, run: ProbeResult, section: MeanActivation, metadata: Mapping[str, str]) -> None:
        return None

    def read(self, files: RunFiles) -> MeanActivation | None:
        if "mean_activation" not in files.tensors:
            return None
        values = tuple(float(n["mean_activation"]) for n in files.neurons)  # type: ignore[index]
        return MeanActivation(files.tensors["mean_activation"], values)


REGISTRY = (*FEATURES, MeanActivationFeature())


def _probe(config: ProbeConfig, out: Path | None = None, resume: bool = False,
           progress: ProgressSink = SilentProgress(), features: tuple[object, ...] = REGISTRY) -> ProbeResult:
    loaded = tiny_loaded("llama")
    data = length_examples(30, seed=2)
    prompt = init_prompt(loaded, 3, seed=0)  # type: ignore[arg-type]
    return probe(loaded, prompt, data, "length", config, progress, out=out, resume=resume,  # type: ignore[arg-type]
                 features=features)  # type: ignore[arg-type]


def test_a_registered_feature_runs_end_to_end(tmp_path: Path) -> None:
    config = ProbeConfig(top_k=6, batch_size=4, holdout=0.0, null=NullConfig(permutations=20))
    result = _probe(config)
    section = result.section(MeanActivation)
    assert section is not None
    # the pass fed it every example: its mean is the moments' mean_x (an independent stream: Chan's merges)
    assert torch.allclose(section.mean, result.stats.mean_x, rtol=0, atol=1e-9)
    assert result.info.extra["mean_activation"] == {"cells": section.mean.numel()}
    assert result.null is not None  # the built-in features still ran beside it

    write_probe_run(tmp_path, result, REGISTRY)
    assert torch.equal(load_file(str(tmp_path / "stats.safetensors"))["mean_activation"], section.mean)
    records = json.loads((tmp_path / "neurons.json").read_text())
    assert [r["mean_activation"] for r in records] == list(section.at_neurons)
    with (tmp_path / "neurons.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [float(r["mean_activation"]) for r in rows] == list(section.at_neurons)
    assert list(rows[0])[-1] == "mean_activation"  # its column after the built-in ones
    assert json.loads((tmp_path / "run.json").read_text())["mean_activation"] == {"cells": section.mean.numel()}

    back = read_probe_run(tmp_path, REGISTRY)
    again = back.section(MeanActivation)
    assert again is not None and torch.equal(again.mean, section.mean) and again.at_neurons == section.at_neurons
    assert read_probe_run(tmp_path).section(MeanActivation) is None  # a reader without the feature ignores it


def test_a_registered_feature_is_checkpointed_with_the_pass(tmp_path: Path) -> None:
    """The pass's checkpoint keeps the feature's statistic like every other: a pass killed mid-way and resumed
    feeds it only the batches after the checkpoint, and ends with the uninterrupted pass's mean, bitwise."""
    config = ProbeConfig(top_k=6, batch_size=4, holdout=0.0, null=NullConfig(permutations=0), checkpoint_every=2)
    (tmp_path / "whole").mkdir()
    whole = _probe(config, out=tmp_path / "whole")
    with pytest.raises(Interrupted):  # in batch 5: the checkpoint after batch 4 holds 16 examples
        _probe(config, out=tmp_path, progress=StopAfter(18))  # type: ignore[arg-type]
    resumed = _probe(config, out=tmp_path, resume=True)
    section, reference = resumed.section(MeanActivation), whole.section(MeanActivation)
    assert section is not None and reference is not None
    assert torch.equal(section.mean, reference.mean) and section.at_neurons == reference.at_neurons
    assert (reference.fed_batches, section.fed_batches) == (8, 4)  # 30 examples in batches of 4; 4 after the checkpoint


def test_two_features_of_one_name_or_column_are_refused(tmp_path: Path) -> None:
    from skn.errors import UsageError
    from skn.features.registry import checked

    assert checked(REGISTRY) == REGISTRY
    with pytest.raises(UsageError, match="the name mean_activation is used by more than one feature"):
        checked((*REGISTRY, MeanActivationFeature()))
    with pytest.raises(UsageError, match="the column p_adjusted is used by more than one feature"):
        checked((*FEATURES, MeanActivationFeature(name="other", columns=("p_adjusted",))))
    with pytest.raises(UsageError, match="used by more than one feature"):
        _probe(ProbeConfig(top_k=3, batch_size=4, holdout=0.0), features=(*REGISTRY, MeanActivationFeature()))
