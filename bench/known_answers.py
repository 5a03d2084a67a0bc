"""Known answers (issue #32): can skn's checks say yes on a planted neuron, and how often do they say yes
on nothing? Every number comes from skn's own functions on a real model with one neuron planted
(skn.models.plant), or nothing planted.

    python bench/known_answers.py --out bench/results/known_answers                 # stories260K, every table
    python bench/known_answers.py --out bench/results/known_answers --sections power --reps 2 --model smollm2

The model and items: stories260K (../shared/models/stories260K-hf, 5 layers x 172 neurons) or
SmolLM2-135M-Instruct (../shared, 30 x 1536), on real HANS items (../shared/data/hans). The labelled
feature is `mentions_doctor` (the premise or hypothesis names a doctor; about 18% of items): text the
model can see, which its slot inputs carry only partly (a ridge read of it, fitted under the three prompts
at stories260K's middle layer, reaches r 0.38-0.49 on held-out items, one r per prompt). Prompts are fixed random initialisations (seeds 0, 1, 2), not trained: the
checks under test are the statistics, and a fixed prompt keeps a repetition to one probe pass.

Sections (each row is appended to OUT/rows.jsonl as soon as it is measured; a rerun skips what is there):

    power      a planted reader of `mentions_doctor` at read strength a (b = 0), at a random neuron of the
               plant layer, probed with the label `mentions_doctor==True` under 3 prompts, holdout 0.5, null
               100: its rank, top 10, passes the null, r held out (and its replication), in the consensus
               top 10 of the 3 prompts
    control    the metric `target` = mentions_doctor + 0.6 * (instruction length, standardised); a doctor
               reader and a length reader planted side by side; probed without and with --control
               instruction_tokens: does the length reader fall and the doctor reader stay?
    ablation   a planted neuron (a = 1) with write strength b toward the first token of one label's completion,
               on items of that label (where the write lowers the loss), ablated (zero at every position; mean at the
               prompt) against 10 random neurons (log-t) and 20 (auto: empirical), and as the top 1 of a
               curve over K = 1, 3, 10 with 10 controls: p and departure
    fwer       nothing planted, a label of shuffled values (the whole-set null) or an iid noise metric known
               only after each batch (the within-batch null): does any neuron pass the null at alpha 0.05?
    ablate_fp  nothing planted: a random neuron ablated against 10 random neurons (log-t, zero at every
               position): how often p < 0.05

`--summary` only rewrites OUT/README.md and OUT/summary.json from the rows, naming the measuring command (kept in
OUT/command.txt) and including OUT/notes.md, where a person's notes on the rows go.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
MODELS = {"stories": SHARED / "models" / "stories260K-hf", "smollm2": SHARED / "models" / "smollm2-135m-instruct"}
HANS = SHARED / "data" / "hans" / "heuristics_evaluation_set.derived.tsv"
SECTIONS = ("power", "control", "fwer", "ablation", "ablate_fp")
READS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
WRITES = (0.0, 1.0, 3.0, 10.0, 30.0)
PROMPT_SEEDS = (0, 1, 2)
PROMPT_LEN = 20
FEATURE = "mentions_doctor"
ALPHA = 0.05


@dataclass(frozen=True)
class Setup:
    loaded: object
    train: tuple[object, ...]  # direction fits
    val: tuple[object, ...]  # probes
    prompts: tuple[torch.Tensor, ...]
    layer: int
    directions: Path  # where fitted read directions are kept, so that a rerun does not fit them again
    slot_inputs: dict[int, torch.Tensor]  # per layer, the training items' slot inputs under the prompts (fit once)


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def hans_examples(n: int, seed: int) -> list[object]:
    from skn.inputs.data import Example
    from skn.tasks.hans import load_hans, to_example

    items = load_hans(HANS)
    picked = random.Random(seed).sample(range(len(items)), n)
    out = []
    for i in picked:
        e = to_example(items[i])
        out.append(Example(e.instruction, e.completion, {**e.meta, FEATURE: "doctor" in e.instruction}, e.source))
    return out


def setup(model: str, n_train: int, n_val: int, layer: int, directions: Path) -> Setup:
    from skn.models.model import load_model
    from skn.training.prompt import init_prompt

    loaded = load_model(str(MODELS[model]), device="cpu")
    examples = hans_examples(n_train + n_val, seed=0)
    prompts = tuple(init_prompt(loaded, PROMPT_LEN, seed) for seed in PROMPT_SEEDS)
    layer = layer if layer >= 0 else loaded.sites.num_layers // 2
    return Setup(loaded, tuple(examples[:n_train]), tuple(examples[n_train:]), prompts, layer, directions, {})


def feature_values(examples: Sequence[object], name: str, loaded: object = None) -> torch.Tensor:
    if name == "instruction_tokens":
        return torch.tensor([float(len(loaded.tokenizer(e.instruction)["input_ids"])) for e in examples],  # type: ignore[attr-defined]
                            dtype=torch.float64)
    return torch.tensor([float(bool(e.meta[name])) for e in examples], dtype=torch.float64)  # type: ignore[attr-defined]


def direction_for(s: Setup, name: str, layer: int) -> object:
    """The read direction of `name`, fitted on the training items' slot inputs under all three prompts; kept in
    s.directions (safetensors: w, v; sd and r in the metadata) and read from there by a rerun with the same model,
    items and layer (on SmolLM2 the fit is about half an hour of 2 cores)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from skn.engine.api import encode
    from skn.inputs.layout import Template
    from skn.models.plant import ReadDirection, read_direction, slot_inputs

    path = s.directions / f"{name}-layer{layer}-{len(s.train)}items.safetensors"
    if path.is_file():
        with safe_open(str(path), "pt") as handle:
            meta = handle.metadata()
            kept = ReadDirection(handle.get_tensor("w"), handle.get_tensor("v"), float(meta["sd"]), float(meta["r"]))
        log(f"read direction of {name} at layer {layer}: kept in {path}")
        return kept
    if layer not in s.slot_inputs:  # the forward passes are the half hour; a second feature reuses them
        rows = encode(s.loaded, s.train, Template.AUTO, PROMPT_LEN)  # type: ignore[arg-type]
        s.slot_inputs[layer] = torch.cat([slot_inputs(s.loaded, rows, p, layer) for p in s.prompts])  # type: ignore[arg-type]
    inputs = s.slot_inputs[layer]
    feature = feature_values(s.train, name, s.loaded).repeat(len(s.prompts))
    groups = torch.arange(len(s.prompts)).repeat_interleave(len(s.train))
    fitted = read_direction(inputs, feature, groups=groups)
    s.directions.mkdir(parents=True, exist_ok=True)
    save_file({"w": fitted.w.contiguous(), "v": fitted.v.contiguous()}, str(path), {"sd": repr(fitted.sd), "r": repr(fitted.r)})
    return fitted


class Rows:
    """OUT/rows.jsonl: one JSON object per measured row; `key` says which, so a rerun skips it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.done: dict[str, dict[str, object]] = {}
        if path.is_file():
            for line in path.read_text().splitlines():
                if line.strip():
                    row = json.loads(line)
                    self.done[str(row["key"])] = row

    def have(self, key: str) -> bool:
        return key in self.done

    def add(self, key: str, row: dict[str, object]) -> None:
        row = {"key": key, **row}
        with self.path.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        self.done[key] = row

    def of(self, section: str) -> list[dict[str, object]]:
        return [r for r in self.done.values() if r.get("section") == section]


def neuron_standing(result: object, layer: int, neuron: int) -> dict[str, object]:
    """Where one neuron stands in a probe result: rank by |r| at its best slot on the ranked fold, its r,
    whether it passes the null, its r held out at that slot."""
    from skn.ranking.rank import best_scores

    corr = result.ranked_corr  # type: ignore[attr-defined]
    best = best_scores(corr, result.info.reduce)  # type: ignore[attr-defined]
    score = best.score.abs().nan_to_num(-1.0)
    mine = float(best.score[layer, neuron])
    rank = int((score > abs(mine)).sum()) + 1
    slot = int(best.position[layer, neuron])
    null = result.null  # type: ignore[attr-defined]
    out: dict[str, object] = {"rank": rank, "r": mine, "slot": slot,
                              "passes_null": bool(null is not None and abs(mine) > null.threshold),
                              "threshold": None if null is None else float(null.threshold)}
    holdout = result.holdout  # type: ignore[attr-defined]
    if holdout is not None:
        held = float(holdout.corr_confirmation[layer, slot, neuron])
        out["r_held_out"] = held
        n = holdout.n_confirmation
        t = held * math.sqrt(max(n - 2, 1) / max(1e-12, 1 - held * held))
        from scipy.stats import t as student_t

        out["replicates"] = bool(math.copysign(1, held) == math.copysign(1, mine) and 2 * student_t.sf(abs(t), n - 2) < ALPHA)
    return out


def probe_once(s: Setup, examples: Sequence[object], metric: object, prompt: torch.Tensor, seed: int,
               holdout: float = 0.5, control: tuple[str, ...] = (), permutations: int = 100) -> object:
    from skn.engine.api import probe
    from skn.engine.probe_config import ProbeConfig
    from skn.statistics.null import NullConfig

    config = ProbeConfig(top_k=10, n_exemplars=0, holdout=holdout, holdout_seed=seed,
                         null=NullConfig(permutations=permutations, seed=seed), control=control)
    return probe(s.loaded, prompt, examples, metric, config)  # type: ignore[arg-type]


# ---------------------------------------------------------------- sections


def power(s: Setup, rows: Rows, reps: int) -> None:
    from skn.ranking.compare import compare_scores, run_scores
    from skn.models.plant import Plant, planted

    direction = direction_for(s, FEATURE, s.layer)
    width = s.loaded.sites.width  # type: ignore[attr-defined]
    for a in READS:
        for rep in range(reps):
            key = f"power|a={a}|rep={rep}"
            if rows.have(key):
                continue
            neuron = random.Random(1000 + rep).randrange(width)
            spec = Plant(s.layer, neuron, FEATURE, a, 0.0)
            start = time.perf_counter()
            with planted(s.loaded, spec, direction):  # type: ignore[arg-type]
                results = [probe_once(s, s.val, f"{FEATURE}==true", p, seed) for seed, p in zip(PROMPT_SEEDS, s.prompts)]
            standings = [neuron_standing(r, s.layer, neuron) for r in results]
            comparison = compare_scores([run_scores(r, f"seed-{seed}") for seed, r in zip(PROMPT_SEEDS, results)], 10)  # type: ignore[arg-type]
            in_consensus = any((c.layer, c.index) == (s.layer, neuron) for c in comparison.consensus)
            rows.add(key, {"section": "power", "a": a, "rep": rep, "layer": s.layer, "neuron": neuron,
                           "per_prompt": standings, "in_consensus_top10": in_consensus,
                           "seconds": time.perf_counter() - start})
            log(f"{key}: ranks {[x['rank'] for x in standings]}, consensus {in_consensus}")


def _target(examples: Sequence[object], lengths: torch.Tensor) -> list[object]:
    """`target` = mentions_doctor + 0.6 * standardised instruction length: a skill with a length confound."""
    from skn.inputs.data import Example

    z = (lengths - lengths.mean()) / lengths.std()
    return [Example(e.instruction, e.completion, {**e.meta, "target": float(bool(e.meta[FEATURE])) + 0.6 * float(z[i])},  # type: ignore[attr-defined]
                    e.source) for i, e in enumerate(examples)]  # type: ignore[attr-defined]


def control(s: Setup, rows: Rows, reps: int) -> None:
    from skn.models.plant import Plant, planted

    doctor = direction_for(s, FEATURE, s.layer)
    length = direction_for(s, "instruction_tokens", s.layer)
    val = _target(s.val, feature_values(s.val, "instruction_tokens", s.loaded))
    width = s.loaded.sites.width  # type: ignore[attr-defined]
    for rep in range(reps):
        key = f"control|rep={rep}"
        if rows.have(key):
            continue
        first, second = random.Random(2000 + rep).sample(range(width), 2)
        out: dict[str, object] = {"section": "control", "rep": rep, "doctor_neuron": first, "length_neuron": second}
        with planted(s.loaded, Plant(s.layer, first, FEATURE, 1.0, 0.0), doctor):  # type: ignore[arg-type]
            with planted(s.loaded, Plant(s.layer, second, "instruction_tokens", 1.0, 0.0), length):  # type: ignore[arg-type]
                for name, covariates in (("raw", ()), ("controlled", ("instruction_tokens",))):
                    result = probe_once(s, val, "target", s.prompts[0], 0, holdout=0.0, control=covariates)
                    out[name] = {"doctor": neuron_standing(result, s.layer, first),
                                 "length": neuron_standing(result, s.layer, second)}
        rows.add(key, out)
        log(f"{key}: length reader rank {out['raw']['length']['rank']} -> {out['controlled']['length']['rank']}, "  # type: ignore[index]
            f"doctor reader {out['raw']['doctor']['rank']} -> {out['controlled']['doctor']['rank']}")  # type: ignore[index]


def write_token(s: Setup) -> int:
    """The first token of the first validation item's completion: the token a planted neuron writes toward."""
    completion = s.val[0].completion  # type: ignore[attr-defined]
    return int(s.loaded.tokenizer(completion, add_special_tokens=False)["input_ids"][0])  # type: ignore[attr-defined]


def _ablation_data(s: Setup, n: int) -> tuple[object, torch.Tensor]:
    """The first n validation items whose completion starts with the write token: on them the write lowers the
    loss, so ablating the neuron raises it (on items of the other label it would raise the loss, and over both
    labels the two would cancel; the first version of this section measured both and found nothing at b <= 1)."""
    from skn.ablation.ablate import prepare
    from skn.engine.api import encode
    from skn.inputs.layout import Template
    from skn.inputs.metrics import parse_metric

    token = write_token(s)
    items = [e for e in s.val if int(s.loaded.tokenizer(e.completion, add_special_tokens=False)["input_ids"][0]) == token][:n]  # type: ignore[attr-defined]
    rows = encode(s.loaded, items, Template.AUTO, PROMPT_LEN)  # type: ignore[arg-type]
    return prepare(s.loaded, s.prompts[0], rows, items, parse_metric("loss"), (), (), False, batch_size=16), s.prompts[0]  # type: ignore[arg-type]


def _mean_x(s: Setup, data: object) -> torch.Tensor:
    """Each cell's mean activation over the items (what `mean` ablation writes), from one label probe."""
    result = probe_once(s, data.examples, f"{FEATURE}==true", s.prompts[0], 0, holdout=0.0, permutations=0)  # type: ignore[attr-defined]
    return result.stats.mean_x  # type: ignore[attr-defined, no-any-return]


def ablation(s: Setup, rows: Rows, reps: int, items: int) -> None:
    from skn.ablation.ablate import AblationConfig, ablate
    from skn.ablation.ablate_curve import k_curve
    from skn.ablation.ablate_test import DepartureTest
    from skn.ablation.intervention import Target, Value, ValueKind, Where
    from skn.models.plant import Plant, planted

    direction = direction_for(s, FEATURE, s.layer)
    data, _ = _ablation_data(s, items)
    token = write_token(s)
    width = s.loaded.sites.width  # type: ignore[attr-defined]
    layers = s.loaded.sites.num_layers  # type: ignore[attr-defined]
    for b in WRITES:
        for rep in range(reps):
            key = f"ablation|b={b}|rep={rep}"
            if rows.have(key):
                continue
            rng = random.Random(3000 + rep)
            neuron = rng.randrange(width)
            spec = Plant(s.layer, neuron, FEATURE, 1.0, b, token if b > 0 else -1)
            out: dict[str, object] = {"section": "ablation", "b": b, "rep": rep, "neuron": neuron}
            with planted(s.loaded, spec, direction):  # type: ignore[arg-type]
                mean_x = _mean_x(s, data)
                every_slot = [Target(s.layer, neuron, k) for k in range(PROMPT_LEN)]
                for label, value, where in (("zero_all", Value(ValueKind.ZERO), Where.ALL),
                                            ("mean_prompt", Value(ValueKind.MEAN), Where.PROMPT)):
                    for controls, test in ((10, DepartureTest.AUTO), (20, DepartureTest.AUTO)):
                        config = AblationConfig(value=value, where=where, n_controls=controls, per_neuron=0, seed=rep, test=test)
                        result = ablate(data, every_slot, mean_x, config, range(len(data.rows)))  # type: ignore[attr-defined, arg-type]
                        summary = result.comparison.summary["loss"]
                        out[f"{label}_c{controls}"] = {"effect": result.comparison.ablated.effect.loss, "p": summary.p,
                                                       "p_empirical": summary.p_empirical, "p_t": summary.p_t}
                others = [Target(l, i, 0) for l in range(layers) for i in range(width) if (l, i) != (s.layer, neuron)]
                rng.shuffle(others)
                ranked = [Target(s.layer, neuron, 0), *others]
                curve = k_curve(data, ranked, (1, 3, 10), mean_x, AblationConfig(value=Value(ValueKind.ZERO), where=Where.ALL,  # type: ignore[arg-type]
                                n_controls=10, seed=rep), range(len(data.rows)))  # type: ignore[attr-defined]
                out["curve_zero_all_c10"] = {"departure_k": None if curve.departure is None else curve.points[curve.departure].k,
                                             "p_holm": [p.p_holm["loss"] for p in curve.points]}
            rows.add(key, out)
            log(f"{key}: zero/all p {out['zero_all_c10']['p']:.3g} (10), {out['zero_all_c20']['p']:.3g} (20); "  # type: ignore[index]
                f"curve departs at {out['curve_zero_all_c10']['departure_k']}")  # type: ignore[index]


NOISE_METRIC = '''"""A metric known only after each batch that is iid noise: each item's `noise` field."""


def noise(example, outputs):
    return example.meta["noise"]
'''


def fwer(s: Setup, rows: Rows, reps: int) -> None:
    from skn.inputs.data import Example

    folder = Path(tempfile.mkdtemp(prefix="skn-known-"))
    (folder / "noise_metric.py").write_text(NOISE_METRIC)
    labels = [bool(e.meta[FEATURE]) for e in s.val]  # type: ignore[attr-defined]
    for rep in range(reps):
        for mode in ("whole_set", "within_batch"):
            key = f"fwer|{mode}|rep={rep}"
            if rows.have(key):
                continue
            rng = random.Random(4000 + rep)
            if mode == "whole_set":
                shuffled = labels[:]
                rng.shuffle(shuffled)
                val = [Example(e.instruction, e.completion, {**e.meta, "shuffled": v}, e.source)  # type: ignore[attr-defined]
                       for e, v in zip(s.val, shuffled)]
                metric = "shuffled==true"
            else:
                val = [Example(e.instruction, e.completion, {**e.meta, "noise": rng.gauss(0, 1)}, e.source)  # type: ignore[attr-defined]
                       for e in s.val]
                metric = f"python:{folder / 'noise_metric.py'}:noise"
            result = probe_once(s, val, metric, s.prompts[0], rep, holdout=0.0)
            null = result.null  # type: ignore[attr-defined]
            rows.add(key, {"section": "fwer", "mode": mode, "rep": rep, "any_passes": any(null.significant),
                           "threshold": float(null.threshold), "top_r": float(result.neurons[0].r),  # type: ignore[attr-defined]
                           "null_mode": null.mode.value})
            if rep % 25 == 0:
                log(f"{key}: threshold {null.threshold:.3f}")


def ablate_fp(s: Setup, rows: Rows, reps: int, items: int) -> None:
    from skn.ablation.ablate import AblationConfig, ablate
    from skn.ablation.intervention import Target, Value, ValueKind, Where

    data, _ = _ablation_data(s, items)
    width = s.loaded.sites.width  # type: ignore[attr-defined]
    layers = s.loaded.sites.num_layers  # type: ignore[attr-defined]
    mean_x = torch.zeros(layers, PROMPT_LEN, width, dtype=torch.float64)
    for rep in range(reps):
        key = f"ablate_fp|rep={rep}"
        if rows.have(key):
            continue
        rng = random.Random(5000 + rep)
        layer, neuron = rng.randrange(layers), rng.randrange(width)
        config = AblationConfig(value=Value(ValueKind.ZERO), where=Where.ALL, n_controls=10, per_neuron=0, seed=rep)
        result = ablate(data, [Target(layer, neuron, k) for k in range(PROMPT_LEN)], mean_x, config, range(len(data.rows)))  # type: ignore[attr-defined, arg-type]
        summary = result.comparison.summary["loss"]
        rows.add(key, {"section": "ablate_fp", "rep": rep, "layer": layer, "neuron": neuron, "p": summary.p,
                       "p_empirical": summary.p_empirical})


# ---------------------------------------------------------------- tables


def _share(values: Sequence[bool]) -> str:
    return f"{sum(values)}/{len(values)}" if values else "-"


def _rate(values: Sequence[bool]) -> tuple[float, float, float]:
    """The share and its Wilson 95% interval."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan, math.nan
    p, z = sum(values) / n, 1.96
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return p, centre - half, centre + half


def summarize(rows: Rows, out: Path, model: str, command: str) -> None:
    notes = out / "notes.md"  # what was written by hand about these rows (kept when the tables are rewritten)
    lines = [f"# Known answers on {model} (issue #32)", "", "Made by", "", f"    {command}", "",
             *([notes.read_text(encoding="utf-8").strip(), ""] if notes.is_file() else []),
             "See the docstring of `bench/known_answers.py` for what each section plants and measures.", ""]
    summary: dict[str, object] = {"model": model}
    power_rows = rows.of("power")
    if power_rows:
        lines += ["## Power: a planted reader of `mentions_doctor` at read strength a (b = 0)", "",
                  "Per cell: over reps x 3 prompts. top 10: in the ranking's top 10; null: passes the family-wise null "
                  "(alpha 0.05, 100 permutations); replicates: r held out of the same sign with p < 0.05; consensus: in "
                  "the consensus top 10 of the 3 prompts (per rep).", "",
                  "| a | reps | median rank | median r | top 10 | null | median r held out | replicates | consensus top 10 |",
                  "|---|---|---|---|---|---|---|---|---|"]
        table = {}
        for a in sorted({float(r["a"]) for r in power_rows}):  # type: ignore[arg-type]
            cell = [r for r in power_rows if float(r["a"]) == a]  # type: ignore[arg-type]
            per = [p for r in cell for p in r["per_prompt"]]  # type: ignore[attr-defined]
            ranks = sorted(int(p["rank"]) for p in per)
            rs = sorted(abs(float(p["r"])) for p in per)
            held = sorted(float(p.get("r_held_out", math.nan)) * math.copysign(1, float(p["r"])) for p in per)
            top = [int(p["rank"]) <= 10 for p in per]
            null = [bool(p["passes_null"]) for p in per]
            rep = [bool(p.get("replicates", False)) for p in per]
            cons = [bool(r["in_consensus_top10"]) for r in cell]
            lines.append(f"| {a:g} | {len(cell)} | {ranks[len(ranks) // 2]} | {rs[len(rs) // 2]:.3f} | {_share(top)} | "
                         f"{_share(null)} | {held[len(held) // 2]:+.3f} | {_share(rep)} | {_share(cons)} |")
            table[str(a)] = {"top10": _rate(top)[0], "null": _rate(null)[0], "replicates": _rate(rep)[0], "consensus": _rate(cons)[0]}
        summary["power"] = table
        lines.append("")
    control_rows = rows.of("control")
    if control_rows:
        lines += ["## --control on a planted length reader", "",
                  "Metric `target` = mentions_doctor + 0.6 x standardised instruction length. Ranks (of every neuron at "
                  "its best slot) without and with `--control instruction_tokens`.", "",
                  "| rep | length reader: raw rank (r) | controlled rank (partial r) | doctor reader: raw rank (r) | controlled rank (partial r) |",
                  "|---|---|---|---|---|"]
        for r in sorted(control_rows, key=lambda r: int(r["rep"])):  # type: ignore[arg-type]
            raw, con = r["raw"], r["controlled"]
            lines.append(f"| {r['rep']} | {raw['length']['rank']} ({raw['length']['r']:+.3f}) | {con['length']['rank']} "  # type: ignore[index]
                         f"({con['length']['r']:+.3f}) | {raw['doctor']['rank']} ({raw['doctor']['r']:+.3f}) | "  # type: ignore[index]
                         f"{con['doctor']['rank']} ({con['doctor']['r']:+.3f}) |")  # type: ignore[index]
        lines.append("")
    ablation_rows = rows.of("ablation")
    if ablation_rows:
        lines += ["## Ablation of a planted neuron (a = 1) at write strength b", "",
                  "Per b: the share of reps with p < 0.05 (median p) on the loss; 10 controls take the log-t test, 20 "
                  "the empirical one (auto). Curve: the planted neuron ranked first, K = 1, 3, 10, 10 controls, Holm; "
                  "departs at K = 1.", "",
                  "| b | reps | zero, all positions: 10 controls | 20 controls | mean, prompt: 10 controls | 20 controls | curve departs at K = 1 |",
                  "|---|---|---|---|---|---|---|"]
        for b in sorted({float(r["b"]) for r in ablation_rows}):  # type: ignore[arg-type]
            cell = [r for r in ablation_rows if float(r["b"]) == b]  # type: ignore[arg-type]

            def col(name: str) -> str:
                ps = sorted(float(r[name]["p"]) if r[name]["p"] is not None else 1.0 for r in cell)  # type: ignore[index]
                return f"{_share([p < ALPHA for p in ps])} ({ps[len(ps) // 2]:.2g})"

            departs = [r["curve_zero_all_c10"]["departure_k"] == 1 for r in cell]  # type: ignore[index]
            lines.append(f"| {b:g} | {len(cell)} | {col('zero_all_c10')} | {col('zero_all_c20')} | {col('mean_prompt_c10')} | "
                         f"{col('mean_prompt_c20')} | {_share(departs)} |")
        lines.append("")
    fwer_rows = rows.of("fwer")
    if fwer_rows:
        lines += ["## False positives with nothing planted", "",
                  "Runs where any neuron passes the family-wise null at alpha 0.05 (100 permutations), with a 95% "
                  "Wilson interval.", "", "| metric | null | runs | any passes | rate [95%] | median threshold |",
                  "|---|---|---|---|---|---|"]
        rates = {}
        for mode, metric in (("whole_set", "label of shuffled values"), ("within_batch", "iid noise known after each batch")):
            cell = [r for r in fwer_rows if r["mode"] == mode]
            if not cell:
                continue
            hits = [bool(r["any_passes"]) for r in cell]
            p, lo, hi = _rate(hits)
            thresholds = sorted(float(r["threshold"]) for r in cell)  # type: ignore[arg-type]
            lines.append(f"| {metric} | {cell[0]['null_mode']} | {len(cell)} | {sum(hits)} | {p:.3f} [{lo:.3f}, {hi:.3f}] | "
                         f"{thresholds[len(thresholds) // 2]:.3f} |")
            rates[mode] = {"runs": len(cell), "rate": p, "low": lo, "high": hi}
        summary["fwer"] = rates
        lines.append("")
    fp_rows = rows.of("ablate_fp")
    if fp_rows:
        hits = [r["p"] is not None and float(r["p"]) < ALPHA for r in fp_rows]  # type: ignore[arg-type]
        p, lo, hi = _rate(hits)
        lines += ["## Ablation's false positives with nothing planted", "",
                  f"A random neuron (zero at every position) against 10 random neurons, log-t test: p < 0.05 in "
                  f"{sum(hits)} of {len(hits)} ({p:.3f}, 95% [{lo:.3f}, {hi:.3f}]). A planted read-only neuron (b = 0) "
                  "changes the loss by exactly 0 and is never called causal (table above, b = 0).", ""]
        summary["ablate_fp"] = {"runs": len(hits), "rate": p, "low": lo, "high": hi}
    (out / "README.md").write_text("\n".join(lines))
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "known_answers")
    parser.add_argument("--model", choices=sorted(MODELS), default="stories")
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument("--reps", type=int, default=5, help="Repetitions per cell of power, control and ablation.")
    parser.add_argument("--fwer-reps", type=int, default=500)
    parser.add_argument("--fp-reps", type=int, default=200)
    parser.add_argument("--train", type=int, default=1500, help="Items that fit the read directions.")
    parser.add_argument("--layer", type=int, default=-1, help="The plant layer [default: the middle one: where a "
                        "read of the feature under the three prompts held out best on stories260K, r 0.38-0.49].")
    parser.add_argument("--val", type=int, default=400, help="Items probed.")
    parser.add_argument("--items", type=int, default=64, help="Items of each ablation.")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--summary", action="store_true", help="Only rewrite README.md and summary.json from the rows.")
    args = parser.parse_args(argv)
    out = args.out / args.model
    out.mkdir(parents=True, exist_ok=True)
    rows = Rows(out / "rows.jsonl")
    command = "python bench/known_answers.py " + " ".join(sys.argv[1:] if argv is None else argv)
    measured_by = out / "command.txt"  # the measuring command, which README.md names (not a later --summary)
    if args.summary and measured_by.is_file():
        command = measured_by.read_text(encoding="utf-8").strip()
    if not args.summary:
        measured_by.write_text(command + "\n", encoding="utf-8")
        if not MODELS[args.model].exists() or not HANS.is_file():
            print(f"needs {MODELS[args.model]} and {HANS}", file=sys.stderr)
            return 2
        torch.set_num_threads(args.threads)
        s = setup(args.model, args.train, args.val, args.layer, out / "directions")
        chosen = [x.strip() for x in args.sections.split(",") if x.strip()]
        runs: dict[str, Callable[[], None]] = {
            "power": lambda: power(s, rows, args.reps), "control": lambda: control(s, rows, args.reps),
            "ablation": lambda: ablation(s, rows, args.reps, args.items), "fwer": lambda: fwer(s, rows, args.fwer_reps),
            "ablate_fp": lambda: ablate_fp(s, rows, args.fp_reps, args.items)}
        for name in chosen:
            log(f"section {name}")
            runs[name]()
            summarize(rows, out, args.model, command)
    summarize(rows, out, args.model, command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
