"""The verdict on a probe in plain words: what was found, how sure, and what the neurons track.

`verdict_lines(result)` is what `skn probe` and `skn show` end with (the notebook view and the report can
print the same lines), one sentence each:

    Found: 10 of 10 top neurons pass the family-wise null (|r| > 0.416, alpha 0.05); 1808 of 2048 neurons pass in all.
    Held out: |r| 0.59 to 0.67 (same sign as chosen for 10 of 10) on the 128 examples that did not choose them;
    100% replicate on the other fold.
    What they track: 'digits' explains 64% of the variance of their activations on average (the most of 2
    grouping fields; the top neuron is highest at digits = 2).
    Reach: 1 of 10 top neurons (3.339@5) sits in the last layer before the last prompt slot: nothing it writes
    reaches a scored token, so it can track the metric but cannot change the completion.

"How sure" is the family-wise permutation null (pass or fail, or that it is off) and the holdout (the r on
examples that played no part in choosing the neurons, and the cross-fitted replication rate), or, without a
holdout, that r was measured on the examples that chose the neurons. "What they track" is the grouping
field (`--group-by` or the task's) whose values explain the largest share of the top neurons' activation
variance (eta squared: between-group over total sum of squares, from the group summaries), if any.
"Reach" appears only when some top neurons cannot change the completion (skn.ranking.reach).
`next_line(run)` says what to run next.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from skn.engine.probe_config import Score
from skn.inputs.groups import GroupSummaries, NeuronGroups, value_label
from skn.files.result import ProbeResult
from skn.ranking.reach import reaches_completion

LOW_REPLICATION = 0.5  # below this replication rate the verdict says most of the ranking did not replicate
MIN_SHARE = 0.05  # a field explaining less of the activation variance than this is said to track nothing


@dataclass(frozen=True)
class Separation:
    """How much one grouping field separates the top neurons' activations."""

    field: str
    share: float  # mean over the top neurons of eta squared (0 to 1); NaN when no neuron has one
    top_value: str  # the value where the top neuron's mean activation is highest ("" when unknown)


def _range(values: list[float]) -> str:
    low, high = f"{min(values):.2f}", f"{max(values):.2f}"
    return low if low == high else f"{low} to {high}"


def found_line(result: ProbeResult) -> str:
    """How many top neurons pass the family-wise null (or that nothing says which exceed chance)."""
    k = len(result.neurons)
    r_name = "partial r" if result.partial is not None else "r"
    given = f" ({r_name} given {', '.join(result.partial.names)})" if result.partial is not None else ""
    null = result.null
    if null is None:
        finite = [abs(n.r) for n in result.neurons if math.isfinite(n.r)]
        size = f" with |{r_name}| up to {max(finite):.2f}" if finite else ""
        return (f"Found: {k} top neurons{size}{given}, but the permutation null is off (--null 0): nothing says "
                "these correlations exceed chance.")
    if not math.isfinite(null.threshold):
        return (f"Found: nothing can pass the family-wise null: {null.permutations} permutations are too few for alpha "
                f"{null.alpha:g} (raise --null).")
    threshold = f"|{r_name}| > {null.threshold:.3f}, alpha {null.alpha:g}"
    if null.n_significant == 0:
        return (f"Found: none of the {k} top neurons passes the family-wise null ({threshold}){given}: a shuffled "
                "metric correlates as strongly, so this run shows no neuron that tracks it.")
    passing = result.passing
    in_all = f"; {passing.total} of {passing.neurons} neurons pass in all" if passing is not None else ""
    return f"Found: {null.n_significant} of {k} top neurons pass the family-wise null ({threshold}){given}{in_all}."


def sure_line(result: ProbeResult) -> str:
    """The held-out r and the replication rate, or why r was measured on the examples that chose the neurons."""
    holdout = result.holdout
    if holdout is None:
        config = result.info.probe_config
        if config is not None and config.score == Score.PREDICTIVITY.value:
            reason = "--score predictivity ranks on all validation examples"
        elif config is not None and config.holdout == 0.0:
            reason = "--holdout 0"
        elif config is not None and config.holdout is None:
            reason = f"{result.info.n_val} examples, too few for the default holdout; --holdout 0.5 forces one"
        else:
            reason = "this run kept no examples apart"
        return f"Not held out ({reason}): r comes from the examples that chose the neurons, so it reads high."
    pairs = [(h.r_held_out, h.r_selection) for h in holdout.per_neuron if math.isfinite(h.r_held_out)]
    same = sum(1 for held, chosen in pairs if held * chosen > 0)
    r_text = (f"|r| {_range([abs(held) for held, _ in pairs])} (same sign as chosen for {same} of {len(pairs)})"
              if pairs else "no r")
    rep = holdout.replication
    if math.isnan(rep.rate):
        replicated = "replication n/a"
    elif rep.rate < LOW_REPLICATION:
        replicated = f"only {rep.rate:.0%} replicate on the other fold: most of this ranking is noise"
    else:
        replicated = f"{rep.rate:.0%} replicate on the other fold"
    return f"Held out: {r_text} on the {holdout.n_confirmation} examples that did not choose them; {replicated}."


def _eta_squared(g: NeuronGroups, field: str) -> float:
    """Between-group over total sum of squares of one neuron's activations, split by `field`."""
    total = g.overall
    if total.count < 2 or not math.isfinite(total.std) or total.std == 0.0:
        return math.nan
    between = sum(group.stats.count * (group.stats.mean - total.mean) ** 2
                  for group in g.by_field[field] if group.stats.count > 0)
    return min(between / ((total.count - 1) * total.std ** 2), 1.0)


def separations(groups: GroupSummaries) -> tuple[Separation, ...]:
    """Each field's mean eta squared over the top neurons, largest first (NaN last)."""
    out = []
    for field in groups.fields:
        shares = [s for s in (_eta_squared(g, field) for g in groups.neurons) if math.isfinite(s)]
        top = groups.neurons[0].by_field[field] if groups.neurons else ()
        present = [group for group in top if group.stats.count > 0 and math.isfinite(group.stats.mean)]
        top_value = value_label(max(present, key=lambda group: group.stats.mean).value) if present else ""
        out.append(Separation(field, sum(shares) / len(shares) if shares else math.nan, top_value))
    return tuple(sorted(out, key=lambda s: -s.share if math.isfinite(s.share) else math.inf))


def track_line(groups: GroupSummaries | None) -> str:
    """The grouping field that separates the top neurons' activations most ("" without groups)."""
    if groups is None or not groups.fields or not groups.neurons:
        return ""
    ranked = separations(groups)
    best = ranked[0]
    if not math.isfinite(best.share):
        return ""
    if best.share < MIN_SHARE:
        return (f"What they track: no grouping field stands out ('{best.field}' explains {best.share:.0%} of the "
                "variance of their activations on average).")
    notes = ([f"the most of {len(ranked)} grouping fields"] if len(ranked) > 1 else []) + (
        [f"the top neuron is highest at {best.field} = {best.top_value}"] if best.top_value else [])
    also = f" ({'; '.join(notes)})" if notes else ""
    return f"What they track: '{best.field}' explains {best.share:.0%} of the variance of their activations on average{also}."


SHOWN_UNREACHABLE = 3  # the reach line names this many of the neurons it counts


def reach_line(result: ProbeResult) -> str:
    """How many top neurons sit where nothing they write reaches a scored token ("" when none do)."""
    num_layers, prompt_len = int(result.corr.shape[0]), int(result.corr.shape[1])
    cut = [n for n in result.neurons if not reaches_completion(n.layer, n.position, num_layers, prompt_len)]
    if not cut:
        return ""
    named = ", ".join(f"{n.layer}.{n.index}@{n.position}" for n in cut[:SHOWN_UNREACHABLE])
    named += ", ..." if len(cut) > SHOWN_UNREACHABLE else ""
    one = len(cut) == 1
    return (f"Reach: {len(cut)} of {len(result.neurons)} top neurons ({named}) {'sits' if one else 'sit'} in the last "
            f"layer before the last prompt slot: nothing {'it writes' if one else 'they write'} reaches a scored "
            f"token, so {'it' if one else 'they'} can track the metric but cannot change the completion.")


def verdict_lines(result: ProbeResult) -> tuple[str, ...]:
    """What was found, how sure, (with groups) what the top neurons track, and (when some cannot change the
    completion) their reach: two to four lines."""
    lines = (found_line(result), sure_line(result), track_line(result.groups), reach_line(result))
    return tuple(line for line in lines if line)


def next_line(run: str, report: str = "", ablated: bool = False) -> str:
    """What to run next on the run directory `run`: `skn report` (or open `report`, the page already written)
    and, unless `ablated`, `skn ablate`."""
    steps = [f"open {report}" if report else f"skn report {run} (figures, one HTML page)"]
    if not ablated:
        steps.append(f"skn ablate {run} (do they matter?)")
    return "Next: " + "; ".join(steps) + "."


__all__ = ["Separation", "found_line", "next_line", "reach_line", "separations", "sure_line", "track_line", "verdict_lines"]
