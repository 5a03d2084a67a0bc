"""The top K from a consensus over several runs: `skn ablate RUN --consensus COMPARE_DIR` reads the
consensus ranking that `skn compare` (or `skn probe --seeds`) wrote to COMPARE_DIR/compare.json and turns
it into targets for RUN.

A consensus neuron is an FFN neuron (layer, index): the runs it agrees over have prompts of their own, whose
slots are not the same thing (skn.ranking.compare). So each consensus neuron is ablated at RUN's own best prompt
slot for it (the position of its largest |r| in RUN's corr, with RUN's --reduce; the slot `skn compare`
lists for RUN when RUN is one of the compared runs), and under --where all at every position. The ranking
is compare.json's order (its "consensus" list, `skn compare --top-k` long): a curve over it reaches at
most that K.
"""

from __future__ import annotations

from pathlib import Path

from skn.ranking.compare import COMPARE_JSON
from skn.errors import RunDirError, UsageError
from skn.ablation.intervention import Target
from skn.ranking.rank import best_scores
from skn.files.result import ProbeResult
from skn.files.rundir import read_json


def consensus_neurons(compare_dir: Path) -> tuple[tuple[int, int], ...]:
    """(layer, neuron) of compare.json's consensus, best first."""
    path = Path(compare_dir) / COMPARE_JSON
    if not path.is_file():
        raise RunDirError(f"{compare_dir}: no {COMPARE_JSON} (run `skn compare RUN RUN ... --out {compare_dir}` first)")
    record = read_json(path)
    entries = record.get("consensus") if isinstance(record, dict) else None
    if not isinstance(entries, list) or not entries:
        raise RunDirError(f"{path}: no consensus list")
    out = []
    for n, entry in enumerate(entries):
        layer = entry.get("layer") if isinstance(entry, dict) else None
        neuron = entry.get("neuron") if isinstance(entry, dict) else None
        if not isinstance(layer, int) or not isinstance(neuron, int) or isinstance(layer, bool) or isinstance(neuron, bool):
            raise RunDirError(f"{path}: consensus entry {n} has no integer layer and neuron")
        out.append((layer, neuron))
    if len(set(out)) != len(out):
        raise RunDirError(f"{path}: a neuron is listed twice in the consensus")
    return tuple(out)


def consensus_models(compare_dir: Path) -> tuple[str, ...]:
    record = read_json(Path(compare_dir) / COMPARE_JSON)
    runs = record.get("runs") if isinstance(record, dict) else None
    return tuple(str(r.get("model", "")) for r in runs if isinstance(r, dict)) if isinstance(runs, list) else ()


def consensus_targets(run: ProbeResult, compare_dir: Path, run_dir: Path | str = "RUN") -> tuple[Target, ...]:
    """compare.json's consensus, best first, each neuron at `run`'s own best slot for it."""
    layers, _, width = (int(s) for s in run.corr.shape)
    neurons = consensus_neurons(compare_dir)
    models = {m for m in consensus_models(compare_dir) if m}
    if models and run.info.model not in models:
        raise UsageError(f"--consensus {compare_dir}: compares runs of {', '.join(sorted(models))}, but {run_dir} is a run of "
                         f"{run.info.model}")
    bad = [f"{l}.{i}" for l, i in neurons if not (0 <= l < layers and 0 <= i < width)]
    if bad:
        raise UsageError(f"--consensus {compare_dir}: {bad[0]} is outside {run_dir}'s {layers} layers x {width} neurons")
    position = best_scores(run.corr, run.info.reduce).position
    return tuple(Target(l, i, int(position[l, i])) for l, i in neurons)
