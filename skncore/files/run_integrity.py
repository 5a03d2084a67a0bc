"""The files of one run agree: sizes, counts, the metric, each neuron's r and the groups' neurons.

Run ids (skn.files.rundir.check_one_run) catch files copied in from another run; these checks also catch a mix in
runs written before run ids, and files edited by hand. Each failure is a RunDirError naming both files.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from torch import Tensor

from skn.errors import RunDirError
from skn.inputs.groups import GroupSummaries
from skn.ranking.rank import Neuron
from skn.files.result import ProbeResult, RunInfo
from skn.files.rundir import EXAMPLES_FILE, GROUPS_FILE, NEURONS_JSON, RUN_FILE, STATS_FILE


def check_sizes(directory: Path, info: RunInfo, corr: Tensor, count: int, n: int) -> None:
    """run.json's sizes are the stats' (a size it does not record, 0, is not compared), and the stats count
    every example."""
    layers, positions, width = (int(x) for x in corr.shape)
    prompt_len = info.extra.get("prompt_len")
    recorded = (("layers", info.layers, layers), ("width", info.width, width),
                ("prompt_len", prompt_len if isinstance(prompt_len, int) else 0, positions))
    for name, value, actual in recorded:
        if value and value != actual:
            raise RunDirError(f"{directory / RUN_FILE}: {name} {value}, but 'corr' in {directory / STATS_FILE} is "
                              f"{layers} x {positions} x {width}: the files are not of one run")
    if count != n:
        raise RunDirError(f"{directory / STATS_FILE}: 'count' is {count}, but {directory / EXAMPLES_FILE} holds {n} "
                          "examples: the files are not of one run")
    if info.n_val and info.n_val != n:
        raise RunDirError(f"{directory / RUN_FILE}: n_val {info.n_val}, but {directory / EXAMPLES_FILE} holds {n} "
                          "examples: the files are not of one run")


def same_number(a: float, b: float, rel: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b or math.isclose(a, b, rel_tol=rel, abs_tol=rel)


def check_metric_files(examples_path: Path, values: Sequence[float], top_path: Path, metric: Tensor) -> None:
    """Each example's metric in examples.jsonl is top_activations' `metric` (both written from one vector)."""
    for index, (mine, theirs) in enumerate(zip(values, metric.tolist(), strict=True)):
        if not same_number(mine, float(theirs), 1e-9):
            raise RunDirError(f"{examples_path}: example {index} has metric {mine!r}, but {top_path} has {theirs!r}: "
                              "the files are not of one run")


def check_ranked_r(directory: Path, run: ProbeResult) -> None:
    """Each neuron's r in neurons.json is the r it was ranked on (stats.safetensors: the selection fold's with a
    holdout, else `corr`) at its cell, to float32 precision."""
    corr = run.ranked_corr
    name = "corr_selection" if run.holdout is not None else "corr"
    if tuple(corr.shape) != tuple(run.corr.shape):
        raise RunDirError(f"{directory / STATS_FILE}: '{name}' is {tuple(corr.shape)}, 'corr' is {tuple(run.corr.shape)}")
    for n in run.neurons:
        cell = float(corr[n.layer, n.position, n.index])
        if not same_number(n.r, cell, 1e-6):
            raise RunDirError(f"{directory / NEURONS_JSON}: rank {n.rank} (layer {n.layer}, neuron {n.index}, position "
                              f"{n.position}) has r {n.r!r}, but '{name}' in {directory / STATS_FILE} is {cell!r} there: "
                              "the files are not of one run")


def check_group_neurons(directory: Path, groups: GroupSummaries, neurons: Sequence[Neuron]) -> None:
    """groups.json summarises neurons.json's neurons, in its order."""
    mine = [(g.neuron.rank, g.neuron.layer, g.neuron.index, g.neuron.position) for g in groups.neurons]
    theirs = [(n.rank, n.layer, n.index, n.position) for n in neurons]
    if mine != theirs:
        raise RunDirError(f"{directory / GROUPS_FILE}: its neurons are not those of {directory / NEURONS_JSON}: "
                          "the files are not of one run")


__all__ = ["check_group_neurons", "check_metric_files", "check_ranked_r", "check_sizes", "same_number"]
