"""Tables of `bench/paper_runs.py`'s run directories (issue #36): one markdown file per experiment and one that
sets the two models side by side, whatever the runs show.

    python bench/paper_tables.py --runs runs/paper --results bench/results/paper   # the wall times: bench/results/paper/kept/commands.jsonl

Per experiment (e.g. smollm2-rq3): per prompt seed, the training (validation loss at the last three checks,
whether it converged: >= 200 steps and within 1% over them, the least-squares trend over the last 100
steps, +- 2 SE, and how far the end of an exponential fit is above its plateau), the top 10's |r| on the
selection fold and on the held-out items, replication, the family-wise null (threshold, neurons passing),
the top neuron's separation of each group (AUROC); the covariates' r with the metric under --control; `skn
compare` across the seeds (top-10 overlap against chance, the consensus) and how many validation items the
runs share; the shorter prompts beside the longer ones (SmolLM2 RQ3's 200-step prompts: their rows, their
comparison, seed 0 at both lengths; Gemma 3 RQ3's 400-step seed 0 against 800 steps); every ablation curve as `skn show`
prints it and in full; and the wall time of every command; for RQ3, per seed, whether the top 10 separate the
last-digit-shortcut items. Across the two models (prompt seed 0 of each, the same items): the per-item metric's
rank correlation, whether the two top 10s carry a shared per-item signal beyond what the items' groups carry
(shared_signal), and the group each top 10 separates best. Experiments not run yet are listed as such.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from skn.ablation.ablate_test import empirical_p

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cpu_budget  # noqa: E402  (the convergence rule)
import paper_keep  # noqa: E402  (where the log of commands is kept)
import paper_runs  # noqa: E402  (the sizes and seeds the runs were made with)
import replicate_paper as rp  # noqa: E402  (the readers of a run directory: summarise, separations, auroc, fmt)

GROUPS = {"rq3": ("last_digit_shortcut", "operation", "digits"), "rq2": ("heuristic", "label"), "rq1": ("skill", "relation")}
TITLES = {"rq3": "RQ3, BIG-bench arithmetic (all 20 subtasks), metric loss, --control instruction_tokens,digits",
          "rq2": "RQ2, HANS, metric heuristic==lexical_overlap",
          "rq1": "RQ1, Skill-Mix's two skills in minimal pairs (skillmix-pairs), metric skill==spatial reasoning, --control instruction_tokens"}
MODELS = {"smollm2": "SmolLM2-135M-Instruct", "gemma3": "Gemma 3 270M (GGUF q4_k_m, dequantised to float32)"}


def converged(info: dict[str, object]) -> tuple[str, str]:
    """The verdict of bench/cpu_budget.py's rule (>= 200 steps, the last three checks within 1%) and the curve."""
    history = info.get("train_history")
    checks = [(int(h["step"]), float(h["val_loss"])) for h in history if h.get("val_loss") is not None] if isinstance(history, list) else []
    if len(checks) < 3:
        return "n/a", "too few checks"
    ok, change = cpu_budget.converged([v for _, v in checks], checks[-1][0])
    text = ", ".join(f"{s}: {v:.4f}" for s, v in checks[-3:])
    return ("yes" if ok else "no") + f" ({change:.2%}); trend {trend(checks)}; {plateau(checks)}", f"{checks[0][0]}: {checks[0][1]:.4f} ... {text}"


def plateau(checks: list[tuple[int, float]], start: int = 100) -> str:
    """Where the curve is heading: the least-squares fit of a + b exp(-step / tau) to the checks from step
    `start` on (tau on a log grid of 10 to 10,000 steps; a and b linear given tau), and how far the fit at the
    last step is above the plateau a (the checks of 256 items are too noisy to read one alone). A best tau at
    the grid's top means no bend in the checks (still falling in a line, or flat and noisy): no plateau can be
    read off. With the linear schedule the lr reaches 0 at the last step, so part of a bend is the schedule's."""
    late = [(s, v) for s, v in checks if s >= start]
    if len(late) < 4:
        return "plateau n/a"
    x, y = np.array([s for s, _ in late], dtype=float), np.array([v for _, v in late])
    taus = np.geomspace(10, 10_000, 1201)  # 0.6% apart: a tau off by the spacing moves the plateau little
    best = (math.inf, 0.0, 0.0, 0)
    for i, tau in enumerate(taus):
        design = np.stack([np.ones_like(x), np.exp(-(x - x[0]) / tau)], axis=1)
        coef, *_ = np.linalg.lstsq(design, y, rcond=None)
        sse = float(((design @ coef - y) ** 2).sum())
        if sse < best[0]:
            best = (sse, float(coef[0]), float(coef[1]), i)
    _, a, b, i = best
    if i == len(taus) - 1 or b <= 0:
        return "plateau n/a (no bend)"
    end = a + b * math.exp(-(x[-1] - x[0]) / taus[i])  # the fit at the last step: less noisy than its check
    return f"fitted plateau {a:.4f} (tau {taus[i]:.0f} steps), the fit at step {int(x[-1])} {end / a - 1:.1%} above it"


def trend(checks: list[tuple[int, float]], span: int = 100) -> str:
    """The validation loss's least-squares slope over the checks of the last `span` steps, as a change per
    `span` steps relative to their mean, +- 2 standard errors: the 1% rule looks at three noisy checks, this
    at the line through the last ones (a slope whose band excludes 0 is still moving)."""
    last = [(s, v) for s, v in checks if s >= checks[-1][0] - span]
    if len(last) < 3:
        return "n/a"
    x, y = np.array([s for s, _ in last], dtype=float), np.array([v for _, v in last])
    slope, intercept = np.polyfit(x, y, 1)
    resid = y - (slope * x + intercept)
    se = math.sqrt(float(resid @ resid) / (len(x) - 2) / float(((x - x.mean()) ** 2).sum()))
    scale = span / float(y.mean())
    return f"{slope * scale:+.1%} +- {2 * se * scale:.1%} per {span} steps"


def cell_name(row: dict[str, object]) -> str:
    """A ranked neuron of neurons.json as the tables write it: L<layer>.<neuron>@<prompt slot>."""
    return f"L{row['layer']}.{row['neuron']}@{row['position']}"


def seed_rows(key: str, runs: list[Path], summaries: dict[Path, rp.Summary]) -> list[str]:
    rq = key.split("-")[1]
    lines = ["| seed | validation loss (first check ... last three) | converged (the 1% rule); trend of the last 100 steps; fitted plateau | top-10 \\|r\\| (selection; partial r under --control) | "
             "held-out r, top 10 (sign-aligned median) | replication | null threshold | neurons passing (of all) | "
             "top neuron | its AUROC per group (value vs rest) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for run in runs:
        if not (run / "run.json").exists():
            lines.append(f"| {run.name} | not run yet | | | | | | | | |")
            continue
        s = summaries[run]
        ok, curve = converged(s.info)
        r_top = [abs(float(n["r"])) for n in s.neurons[:10]]
        held = [float(n["r_held_out"]) * math.copysign(1, float(n["r"])) for n in s.neurons[:10] if n.get("r_held_out") is not None]
        holdout = s.info.get("holdout") if isinstance(s.info.get("holdout"), dict) else {}
        rep = holdout.get("replication", {}) if isinstance(holdout, dict) else {}
        top = s.neurons[0]
        seps = rp.separations(s.top_activation[0], s.meta, GROUPS[rq])
        sep_text = "; ".join(f"{x.field}={x.value} {rp.fmt(x.auroc)}" for x in seps[:6])
        lines.append(f"| {run.name} | {curve} | {ok} | {min(r_top):.3f}-{max(r_top):.3f} | "
                     f"{rp.fmt(float(np.median(held))) if held else 'n/a'} | {replication(rep)} | "
                     f"{rp.fmt(s.threshold)} | {s.passing_neurons} of {s.n_neurons} | "
                     f"{cell_name(top)} ({float(top['r']):+.3f}) | {sep_text} |")
    return lines


def replication(rep: object) -> str:
    rate = float(rep.get("rate", math.nan)) if isinstance(rep, dict) else math.nan
    return "n/a" if math.isnan(rate) else f"{rate:.0%}"


def control_lines(runs: list[Path]) -> list[str]:
    lines = []
    for run in runs:
        if (run / "run.json").exists():
            control = rp.read_json(run / "run.json")
            summary = control.get("control") if isinstance(control, dict) else None
            if summary:
                lines.append(f"- {run.name}: `{json.dumps(summary)[:600]}`")
    return ["Under --control (run.json's `control`: the covariates' r with the metric; the ranking is by partial r):", "",
            *lines, ""] if lines else []


def compare_lines(folder: Path, what: str = "across the seeds") -> list[str]:
    path = folder / "compare.json"
    if not path.exists():
        return [f"skn compare {what}: not run yet", ""]
    c = rp.read_json(path)
    assert isinstance(c, dict)
    name = [Path(str(r["name"])).name for r in c["runs"]]
    pairs = ", ".join(f"{name[p['a']]}/{name[p['b']]} {p['overlap']} (chance {p['overlap_chance']:.2f}), "
                      f"Spearman {rp.fmt(p['spearman'], 3) if p['spearman'] is not None else 'n/a'}" for p in c["pairs"])
    passing = [r.get("n_passing") for r in c["runs"]]
    lines = [f"skn compare {what} (top {c['top_k']}): overlap per pair {pairs}; mean Jaccard "
             f"{rp.fmt(c['mean_jaccard']) if c['mean_jaccard'] is not None else 'n/a'}; neurons passing each null {passing}, "
             f"passing all {c.get('passing_all')}.", "", "Consensus top 10 (min over seeds of |score|):", "",
             "| rank | layer | neuron | consensus min | scores per seed | passes every null |", "|---|---|---|---|---|---|"]
    for n in c["consensus"][:10]:
        scores = ", ".join("n/a" if x is None else f"{x:+.3f}" for x in n["scores"])
        lines.append(f"| {n['rank']} | {n['layer']} | {n['neuron']} | {n['consensus_min']:.3f} | {scores} | {n['passes_all']} |")
    return lines + [""]


def consensus_overlap(a: Path, b: Path, what: str) -> list[str]:
    """How many neurons the consensus top 10 of two comparisons (two sets of prompts) have in common, against
    the overlap two random draws of as many neurons would have."""
    if not ((a / "compare.json").exists() and (b / "compare.json").exists()):
        return []
    ca, cb = rp.read_json(a / "compare.json"), rp.read_json(b / "compare.json")
    assert isinstance(ca, dict) and isinstance(cb, dict)
    top = [{(int(n["layer"]), int(n["neuron"])) for n in c["consensus"][:10]} for c in (ca, cb)]
    both = sorted(top[0] & top[1])
    n_neurons = int(ca["neurons"])  # how many neurons each run scored
    chance = f" (chance {len(top[0]) * len(top[1]) / n_neurons:.3f})" if n_neurons else ""
    return [f"Consensus top 10 of {what}: {len(both)} neurons in common{chance}: "
            + ", ".join(f"L{layer}.{neuron}" for layer, neuron in both) + ".", ""]


def shared_items(runs: list[Path]) -> list[str]:
    """How many validation items (examples.jsonl's `source`) each pair of runs has in common."""
    done = [r for r in runs if (r / "examples.jsonl").exists()]
    if len(done) < 2:
        return []
    items = {r: set(column(r, "source")) for r in done}
    pairs = [f"{a.name}/{b.name} {len(items[a] & items[b])} of {len(items[a])}" for i, a in enumerate(done) for b in done[i + 1:]]
    return [f"Validation items in common: {', '.join(pairs)}.", ""]


def shown(run: Path) -> list[str]:
    """The ablation curve as `skn show RUN` prints it (the library's own reading of ablation_curve.json)."""
    if not (run / "ablation_curve.json").exists():
        return [f"Ablation curve of {run.name}: not run yet", ""]
    text = subprocess.run([rp.SKN, "show", str(run), "--exemplars", "0"], capture_output=True, text=True, cwd=rp.ROOT,
                          check=True).stdout
    start, end = text.find("ablation curve:"), text.find("\nFound:")
    if start < 0:
        raise SystemExit(f"skn show {run}: no ablation curve in its output")
    return [f"Ablation curve of {run.name} (`skn show`):", "", "```", text[start : end if end > start else None].strip(), "```", ""]


def _g(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2e}" if abs(value) < 0.01 else f"{value:+.4f}"


def curve_table(run: Path) -> list[str]:
    """Every point of every curve of RUN/ablation_curve.json, unabridged (skn's own reader)."""
    if not (run / "ablation_curve.json").exists():
        return []
    from skn.ablation.ablate_files import read_curve

    record = read_curve(run)
    base = record.base
    lines = [f"Unablated on the {record.n_items} items: loss {base.loss:.4f}, accuracy {base.accuracy}. "
             f"Each point: the top K (ranked on the selection fold) zeroed, against {record.config.controls} random sets of "
             f"K with the same count per layer at the same slots; p from the {record.curves[0].test.value if record.curves[0].test else 'empirical'} "
             f"test, Holm over each curve's {len(record.curves[0].points)} points.", "",
             "| place | K | loss effect | random median [5%, 95%] | p | Holm p | accuracy effect | random accuracy mean |",
             "|---|---|---|---|---|---|---|---|"]
    for curve in record.curves:
        for point in curve.points:
            band, spread, acc = point.band.loss, point.controls_summary.loss, point.controls_summary.accuracy
            random_loss = f"{_g(band.median)} [{_g(band.q05)}, {_g(band.q95)}]" if band else "-"
            p = f"{spread.p:.2g}" if spread and spread.p is not None else "-"
            holm = f"{point.p_holm.loss:.2g}" if point.p_holm.loss is not None else "-"
            lines.append(f"| {curve.where} | {point.k} | {_g(point.effect.loss)} | {random_loss} | {p} | {holm} | "
                         f"{_g(point.effect.accuracy)} | {_g(acc.mean) if acc else '-'} |")
        depart = curve.departure
        lines.append(f"| {curve.where}: departs | {depart.k if depart else 'never'} | | | | | | |")
    return [*lines, ""]


def wall_times(log: Path, key: str) -> list[str]:
    """The commands of experiment KEY in the log (KEPT/commands.jsonl) and their wall times."""
    rows = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line] if log.exists() else []
    mine = [r for r in rows if f"/{key}/" in r["command"]]
    return ["Commands and wall times (2 CPU cores):", "", *(f"- {r['wall_s']:.0f} s{resumed(r)}: `{r['command']}`{renamed(r)}" for r in mine), ""]


def resumed(row: dict[str, object]) -> str:
    """A command that resumed after a kill (a probe's --resume, a curve's checkpoint) logs the wall time of its last
    part only (a killed part logs nothing). Lines logged before `resumed` was (2026-12-07) mark only probes."""
    again = bool(row.get("resumed")) or "--resume" in str(row["command"]).split()
    return " (the part after the last resume; a part that was killed is not timed)" if again else ""


# SmolLM2 RQ3 ran first with 200-step prompts written to seed-S and compared into compare; when the prompts went
# to 400 steps those folders were renamed once, at RENAME_TIME (bench/README), the comparisons with them.
RENAME_TIME = "2026-12-07 07:53:00"
RENAMED = {"seed-0": "seed-0-200steps", "seed-1": "seed-1-200steps", "seed-2": "seed-2-200steps",
           "compare": "compare-200steps", "compare-longer": "compare-steps"}


def renamed(row: dict[str, object]) -> str:
    """A note for a command logged before the rename whose folder (--out, or the run `skn ablate` reads) was renamed."""
    words = str(row["command"]).split()
    if str(row["finished"]) >= RENAME_TIME:
        return ""
    folder = words[words.index("--out") + 1] if "--out" in words[:-1] else words[2] if words[1:2] == ["ablate"] else ""
    name = Path(folder).name
    return f" (before {RENAME_TIME}; that folder is now {RENAMED[name]})" if name in RENAMED else ""


def plan(key: str) -> paper_runs.Experiment:
    """How bench/paper_runs.py makes experiment KEY (its steps, its shorter prompts)."""
    return next(e for e in paper_runs.experiments("GEMMA.gguf") if e.key == key)


def run_dirs(folder: Path) -> list[Path]:
    """The experiment's runs: those bench/paper_runs.py makes first (seed-S-{steps}steps at its steps, present
    or not), then any other seed-S-{N}steps present, by steps (most first) and seed."""
    steps = plan(folder.name).steps(paper_runs.FULL)
    expected = [folder / f"seed-{s}-{steps}steps" for s in paper_runs.SEEDS]
    others = [d for d in folder.glob("seed-*-*steps") if d.is_dir() and d not in expected]

    def order(d: Path) -> tuple[int, int]:
        _, seed, steps = d.name.split("-")
        return -int(steps.removesuffix("steps")), int(seed)

    return expected + sorted(others, key=order)


def summary(run: Path, read: dict[Path, rp.Summary]) -> rp.Summary:
    """RUN's summary, read from its files once per table run (`read` keeps it for the two-model table)."""
    if run not in read:
        read[run] = rp.summarise(run)
    return read[run]


def experiment(runs_root: Path, key: str, read: dict[Path, rp.Summary], log: Path) -> list[str]:
    model, rq = key.split("-")
    folder = runs_root / key
    runs = run_dirs(folder)
    summaries = {run: summary(run, read) for run in runs if (run / "run.json").exists()}
    lines = [f"# {MODELS[model]}: {TITLES[rq]}", "", *seed_rows(key, runs, summaries), ""]
    made = plan(key)
    steps = made.steps(paper_runs.FULL)
    shorter, seeds, same_items = made.shorter_runs(paper_runs.FULL)
    at = {n: [folder / f"seed-{s}-{n}steps" for s in paper_runs.SEEDS] for n in (steps, shorter)}
    lines += control_lines(runs) + compare_lines(folder / "compare", f"across the seeds at {steps} steps") + shared_items(at[steps])
    if len(seeds) > 1 and (folder / f"compare-{shorter}steps").exists():
        drawn = "on the same items" if same_items else ("made with --seed S: seeds 1 and 2 drew other items and other prompts; "
                                                        "seed 0's prompt started from the same draw at both lengths")
        lines += compare_lines(folder / f"compare-{shorter}steps", f"across the seeds at {shorter} steps") + shared_items(at[shorter])
        lines += consensus_overlap(folder / "compare", folder / f"compare-{shorter}steps",
                                   f"the {steps}-step prompts and of the {shorter}-step prompts ({drawn})")
    if seeds and (folder / "compare-steps").exists():
        lines += compare_lines(folder / "compare-steps", f"of seed 0 at {shorter} and at {steps} steps") + shared_items(
            [at[shorter][0], at[steps][0]])
    for run in runs:  # the curve of seed 0 at the full steps, present or not, and any other run's
        if run == runs[0] or (run / "ablation_curve.json").exists():
            lines += shown(run) + curve_table(run)
    lines += wall_times(log, key)
    for run in (runs if rq == "rq3" else []):
        if run in summaries:
            lines += [f"{run.name}: do the top 10 separate the last-digit-shortcut items?", "", *rp.shortcut_analysis(summaries[run]), ""]
    if rq == "rq1" and runs[0] in summaries:
        lines += [f"{runs[0].name}, the minimal pairs:", "", *pair_lines(summaries[runs[0]])]
    return lines


def pair_lines(s: rp.Summary) -> list[str]:
    """RQ1 in minimal pairs: for the pairs whose two members are both validation items, does each top neuron
    order the members by skill? Within a pair the wording is the same, so this comparison holds it fixed
    exactly; a sign test (two-sided, ties dropped) against 1/2."""
    from scipy.stats import binomtest

    members: dict[int, dict[str, int]] = {}
    for i, m in enumerate(s.meta):
        if "pair" in m:
            members.setdefault(int(str(m["pair"])), {})[str(m["skill"])] = i
    both = np.array([(d["spatial reasoning"], d["metaphor"]) for d in members.values() if len(d) == 2], dtype=np.int64)
    if len(both) == 0:
        return ["Within pairs: no pair has both members among the validation items.", ""]
    lines = [f"Within pairs ({len(both)} pairs with both members among the validation items): the share where the neuron "
             "is further toward its r's sign on the spatial member than on the metaphor member (sign test, ties dropped).", "",
             "| rank | neuron | r | spatial member further | p |", "|---|---|---|---|---|"]
    for k in range(min(10, len(s.neurons), len(s.top_activation))):
        n = s.neurons[k]
        diff = math.copysign(1.0, float(n["r"])) * (s.top_activation[k][both[:, 0]] - s.top_activation[k][both[:, 1]])
        wins, untied = int((diff > 0).sum()), int((diff != 0).sum())
        p = binomtest(wins, untied, 0.5).pvalue if untied else math.nan
        lines.append(f"| {k + 1} | L{n['layer']}.{n['neuron']}@{n['position']} | {float(n['r']):+.3f} | "
                     f"{wins}/{untied} ({wins / untied if untied else math.nan:.0%}) | {rp.fmt(float(p), 2) if p >= 0.01 else f'{p:.1e}'} |")
    return lines + [""]


def column(run: Path, name: str) -> list[object]:
    """One field of every line of RUN/examples.jsonl (the items, in the file's order, with their metric)."""
    return [json.loads(line)[name] for line in (run / "examples.jsonl").read_text(encoding="utf-8").splitlines() if line]


def seed0(folder: Path) -> Path:
    """Prompt seed 0's run of an experiment: at the experiment's steps when it is there, else the longest
    seed-0 run there is (Gemma 3's 400-step prompt until its 800-step one is done)."""
    runs = run_dirs(folder)
    return next((d for d in runs if d.name.startswith("seed-0-") and (d / "run.json").exists()), runs[0])


def _ranks(rows: np.ndarray) -> np.ndarray:
    """Each row's average ranks (ties share their mean rank), centred and scaled to unit norm."""
    from scipy.stats import rankdata

    r = rankdata(rows, axis=1)
    r -= r.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(r, axis=1, keepdims=True)
    return np.divide(r, norm, out=np.zeros_like(r), where=norm > 0)


@dataclass(frozen=True)
class SharedSignal:
    """The largest |Spearman| between one model's top neurons and the other's, item by item, against the same
    largest |rho| with the second model's items shuffled: across all items (a null of no shared per-item
    signal), or within strata (a null where the two share only what the strata, e.g. the operation, carry)."""

    rho: float  # signed, at the pair of largest |rho|
    pair: tuple[int, int]  # (rank in model A's top, rank in model B's top), from 0
    threshold: float  # the null's 95% quantile of the largest |rho|
    p: float  # skn's empirical p: (1 + shuffles at least as large) / (1 + shuffles)


def _shuffle(strata: np.ndarray, gen: np.random.Generator) -> np.ndarray:
    """A permutation of the items that moves each item only within its stratum."""
    order = np.arange(len(strata))
    for value in np.unique(strata):
        inside = np.flatnonzero(strata == value)
        order[inside] = gen.permutation(inside)
    return order


def shared_signal(a: np.ndarray, b: np.ndarray, strata: np.ndarray | None = None, shuffles: int = 1000,
                  seed: int = 0) -> SharedSignal:
    """A [Ka, N] and B [Kb, N]: the top neurons' activations of two models on the same N items, in the same
    order; `strata` [N]: shuffle only within these groups (None: across all items)."""
    ra, rb = _ranks(a), _ranks(b)
    rho = ra @ rb.T
    i, j = np.unravel_index(int(np.abs(rho).argmax()), rho.shape)
    gen = np.random.default_rng(seed)
    groups = np.zeros(rb.shape[1], dtype=np.int64) if strata is None else strata
    null = np.array([np.abs(ra @ rb[:, _shuffle(groups, gen)].T).max() for _ in range(shuffles)])
    p = empirical_p(float(rho[i, j]), [float(x) for x in null])
    assert p is not None  # an observed value and at least one shuffle
    return SharedSignal(float(rho[i, j]), (int(i), int(j)), float(np.quantile(null, 0.95)), p)


def two_models(runs_root: Path, rq: str, read: dict[Path, rp.Summary]) -> list[str]:
    """Does a finding hold in both models, on the same items? The per-item metric's rank correlation, whether
    the two top 10s carry a shared per-item signal (shared_signal, over all items and within the groups), and
    which group each model's top neurons separate best."""
    a, b = (seed0(runs_root / f"{m}-{rq}") for m in ("smollm2", "gemma3"))
    if not ((a / "run.json").exists() and (b / "run.json").exists()):
        return [f"## {TITLES[rq]}: both models not run yet", ""]
    sa, sb = summary(a, read), summary(b, read)
    same = column(a, "source") == column(b, "source")
    lines = [f"## {TITLES[rq]}", "", f"Runs: {a.parent.name}/{a.name} and {b.parent.name}/{b.name}. "
             f"Same validation items in both runs: {'yes' if same else 'no'}.", ""]
    if same:
        from scipy.stats import spearmanr

        ya, yb = np.array(column(a, "metric"), dtype=float), np.array(column(b, "metric"), dtype=float)
        lines += [f"Rank correlation of the per-item metric between the two models: Spearman {spearmanr(ya, yb).statistic:+.3f} "
                  f"(n = {len(ya)}).", ""]
        k = min(10, len(sa.neurons), len(sb.neurons))
        everywhere = shared_signal(sa.top_activation[:k], sb.top_activation[:k])
        labels = [json.dumps([m.get(f) for f in GROUPS[rq]]) for m in sa.meta]
        strata = np.unique(labels, return_inverse=True)[1]
        within = shared_signal(sa.top_activation[:k], sb.top_activation[:k], strata)
        na, nb = (cell_name(s.neurons[x]) for s, x in ((sa, everywhere.pair[0]), (sb, everywhere.pair[1])))
        lines += [f"Do the two top {k}s carry the same per-item signal? The largest |Spearman| between a SmolLM2 top-{k} "
                  f"neuron's activation and a Gemma 3 one's, item by item: {everywhere.rho:+.3f} ({na} and {nb}). "
                  f"Gemma 3's items shuffled 1,000 times: across all items the largest reaches {everywhere.threshold:.3f} "
                  f"in 95% of shuffles (p = {everywhere.p:.3g}); within the {int(strata.max()) + 1} groups of "
                  f"{', '.join(GROUPS[rq])} (what the items' kind alone would share) {within.threshold:.3f} "
                  f"(p = {within.p:.3g}).", ""]
    lines += ["| model | neurons passing | best-separated group of the top 10 (median AUROC distance from 0.5) |", "|---|---|---|"]
    for name, s in (("smollm2", sa), ("gemma3", sb)):
        best: dict[str, list[float]] = {}
        for i in range(min(10, len(s.neurons))):
            for x in rp.separations(s.top_activation[i], s.meta, GROUPS[rq]):
                best.setdefault(f"{x.field}={x.value}", []).append(abs(x.auroc - 0.5))
        ranked = sorted(((float(np.median(v)), k) for k, v in best.items()), reverse=True)[:3]
        lines.append(f"| {MODELS[name]} | {s.passing_neurons} of {s.n_neurons} | "
                     + ", ".join(f"{k} {d + 0.5:.2f}" for d, k in ranked) + " |")
    return lines + [""]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=Path, required=True)
    parser.add_argument("--results", type=Path, required=True)
    parser.add_argument("--kept", type=Path, default=paper_runs.KEPT, help="where paper_runs.py keeps its log of commands")
    args = parser.parse_args()
    args.results.mkdir(parents=True, exist_ok=True)
    read: dict[Path, rp.Summary] = {}  # every run's summary, read once
    for key in ("smollm2-rq3", "smollm2-rq2", "smollm2-rq1", "gemma3-rq3", "gemma3-rq2"):
        if (args.runs / key).exists():
            (args.results / f"{key}.md").write_text("\n".join(experiment(args.runs, key, read, args.kept / paper_keep.LOG)), encoding="utf-8")
    both = ["# Two model families on the same items", ""] + two_models(args.runs, "rq3", read) + two_models(args.runs, "rq2", read)
    (args.results / "two_models.md").write_text("\n".join(both), encoding="utf-8")
    print(f"tables in {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
