"""bench/paper_tables.py's convergence readings (the trend and the exponential plateau) on curves whose answer
is known, and bench/paper_runs.py's plan (each experiment's steps and shorter prompts)."""

from __future__ import annotations

import math
import re

from helpers import bench_script


def _curve(a: float, b: float, tau: float, last: int = 400, every: int = 20) -> list[tuple[int, float]]:
    return [(s, a + b * math.exp(-s / tau)) for s in range(every, last + every, every)]


def test_plateau_recovers_a_known_exponential() -> None:
    tables = bench_script("paper_tables")
    text = tables.plateau(_curve(0.28, 1.2, 180.0))
    match = re.fullmatch(r"fitted plateau (\S+) \(tau (\d+) steps\), the fit at step 400 (\S+)% above it", text)
    assert match is not None, text
    assert abs(float(match.group(1)) - 0.28) < 2e-3
    assert abs(int(match.group(2)) - 180) <= 2  # the tau grid is 0.6% apart
    gap = 1.2 * math.exp(-400 / 180) / 0.28  # the fit at step 400 above the plateau
    assert abs(float(match.group(3)) / 100 - gap) < 0.01


def test_plateau_of_a_straight_line_is_not_read_off() -> None:
    tables = bench_script("paper_tables")
    line = [(s, 0.5 - 1e-4 * s) for s in range(20, 420, 20)]
    assert tables.plateau(line) == "plateau n/a (no bend)"
    assert tables.plateau(line[:3]) == "plateau n/a"  # too few checks after step 100


def test_trend_of_a_known_line() -> None:
    tables = bench_script("paper_tables")
    line = [(s, 1.0 - 1e-4 * s) for s in range(20, 420, 20)]  # last 100 steps: mean 0.965, slope -0.01 per 100
    text = tables.trend(line)
    assert text.startswith(f"{-0.01 / 0.965:+.1%} +- 0.0% per 100 steps"), text


def test_plan_gives_gemma_twice_the_steps_and_keeps_the_shorter_prompts() -> None:
    runs = bench_script("paper_runs")
    plan = {e.key: e for e in runs.experiments("gemma.gguf")}
    full = runs.FULL
    assert plan["smollm2-rq3"].steps(full) == 400 and plan["gemma3-rq3"].steps(full) == 800
    assert plan["gemma3-rq2"].steps(full) == 800 and plan["smollm2-rq1"].steps(full) == 400
    assert plan["smollm2-rq3"].shorter_runs(full) == (200, (0, 1, 2), False)
    assert plan["gemma3-rq3"].shorter_runs(full) == (400, (0,), True)
    assert plan["smollm2-rq2"].shorter_runs(full) == (0, (), True)
    assert "gemma3-rq1" not in plan and not any(k.startswith("gemma3") for k in (e.key for e in runs.experiments("")))


def test_shared_signal_finds_a_planted_pair_and_not_noise() -> None:
    import numpy as np

    tables = bench_script("paper_tables")
    gen = np.random.default_rng(3)
    n = 400
    a, b = gen.normal(size=(10, n)), gen.normal(size=(10, n))
    quiet = tables.shared_signal(a, b, shuffles=200)
    assert quiet.p > 0.05 and abs(quiet.rho) < quiet.threshold  # independent models: nothing shared
    b[7] = -np.exp(a[2] + 0.5 * gen.normal(size=n))  # model B's 8th neuron: a monotone, noisy copy of A's 3rd, flipped
    found = tables.shared_signal(a, b, shuffles=200)
    assert found.pair == (2, 7) and found.rho < -0.8 and found.p == 1 / 201
    exact = np.corrcoef(np.argsort(np.argsort(a[2])), np.argsort(np.argsort(b[7])))[0, 1]  # Spearman, no ties
    assert abs(found.rho - exact) < 1e-12
    assert 0.1 < found.threshold < 0.25  # the largest of 100 |rho| on 400 items: about 3.5 / sqrt(400)


def test_shared_signal_within_strata_keeps_what_the_groups_share() -> None:
    import numpy as np

    tables = bench_script("paper_tables")
    gen = np.random.default_rng(4)
    n = 400
    kind = np.repeat(np.arange(4), n // 4)  # e.g. the operation
    a, b = gen.normal(size=(5, n)), gen.normal(size=(5, n))
    a[0] += 3 * kind  # both models' first neuron track the kind of item, and nothing else in common
    b[0] += 3 * kind
    shared = tables.shared_signal(a, b, shuffles=200)
    assert shared.pair == (0, 0) and shared.rho > 0.8 and shared.p == 1 / 201  # something is shared...
    kind_only = tables.shared_signal(a, b, kind, shuffles=200)
    assert kind_only.threshold > 0.8 and kind_only.p > 0.05  # ...and the kind of item explains it
    order = tables._shuffle(kind, gen)
    assert sorted(order) == list(range(n)) and (kind[order] == kind).all() and (order != np.arange(n)).any()
