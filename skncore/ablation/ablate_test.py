"""How an ablated set is tested against its random controls: which test, and whether it can say yes.

    empirical   p = (1 + #{|c| >= |e|}) / (C + 1)            exact for exchangeable sets; its floor is
                                                              1 / (C + 1), so Holm over a grid of G points
                                                              can only reach alpha with C >= G / alpha - 1
    log-t       t = (log|e| - mean log|c|) / (sd log|c| sqrt(1 + 1/C)),   p = P(T_{C-1} >= t)
                a one-sided prediction-interval t test of the set's |effect| against the controls',
                on the log scale (a random set's |effect| is skewed: most neurons do little, a few much;
                its log is closer to normal). Approximate, but it can say yes with ~10 controls.
    auto        empirical where its floor can reach alpha after Holm over the family (C >= G / alpha - 1),
                log-t elsewhere (the default curve, C = 20 over 7-11 points; a small budget of controls)

Both p-values are always computed and written; `p` is the chosen test's. A zero effect has p = 1 under
log-t. Where the controls' |effects| are all equal the t statistic is infinite (p 0) for a larger effect.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from enum import Enum

from skn.ablation.intervention import Target, Where
from skn.errors import UsageError
from skn.ranking.reach import reaches_completion

ALPHA = 0.05


class DepartureTest(Enum):
    AUTO = "auto"
    EMPIRICAL = "empirical"
    LOG_T = "log-t"


def empirical_p(effect: float | None, controls: Sequence[float | None]) -> float | None:
    """(1 + #{|c| >= |effect|}) / (C + 1), over the controls where the measure exists."""
    values = [c for c in controls if c is not None]
    if effect is None or not values:
        return None
    return (1 + sum(1 for c in values if abs(c) >= abs(effect))) / (len(values) + 1)


def log_t_p(effect: float | None, controls: Sequence[float | None]) -> float | None:
    """One-sided prediction-interval t test of log|effect| against the controls' log|effect| (None below 2 controls)."""
    values = [abs(c) for c in controls if c is not None]
    if effect is None or len(values) < 2:
        return None
    if effect == 0:
        return 1.0
    # a control with no effect at all (a neuron the scored positions never see) would be log 0
    floor = 1e-12 * max(abs(effect), *values)
    logs = [math.log(v + floor) for v in values]
    x = math.log(abs(effect) + floor)
    if min(logs) == max(logs):  # no spread (the mean of equal floats may round off them: compare the values)
        return 0.0 if x > logs[0] else 1.0
    n = len(logs)
    mean = sum(logs) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in logs) / (n - 1))
    from scipy.stats import t as student_t

    return float(student_t.sf((x - mean) / (sd * math.sqrt(1 + 1 / n)), df=n - 1))


def empirical_can_depart(n_controls: int, family: int, alpha: float = ALPHA) -> bool:
    """Holm's smallest adjusted empirical p, family / (C + 1), is below alpha."""
    return n_controls > 0 and family / (n_controls + 1) < alpha


def resolve_test(test: DepartureTest, n_controls: int, family: int, alpha: float = ALPHA) -> DepartureTest:
    """AUTO -> EMPIRICAL where its floor can reach alpha over `family` tests, else LOG_T."""
    if test is not DepartureTest.AUTO:
        return test
    return DepartureTest.EMPIRICAL if empirical_can_depart(n_controls, family, alpha) else DepartureTest.LOG_T


def cannot_depart(test: DepartureTest, n_controls: int, family: int, alpha: float = ALPHA) -> str:
    """Why this configuration can never give p < alpha (after Holm over `family`), or "" when it can."""
    chosen = resolve_test(test, n_controls, family, alpha)
    if chosen is DepartureTest.LOG_T and n_controls < 2:
        return f"with {n_controls} random sets the log-t test has no spread to compare with (it needs 2 or more)"
    if chosen is DepartureTest.EMPIRICAL and not empirical_can_depart(n_controls, family, alpha):
        need = math.ceil(family / alpha)
        return (f"with {n_controls} random sets the empirical test cannot reach p < {alpha:g} over {family} "
                f"point{'s' if family != 1 else ''} (it needs {need} or more; --test log-t or auto can)")
    return ""


def inert_note(targets: Sequence[Target], num_layers: int, prompt_len: int, wheres: Sequence[Where]) -> str:
    """Why ablating some of `targets` at the prompt cannot change the completion, or "" when all can: a neuron
    of the last layer writes only into its own position's output, and the output of a slot before the last
    predicts nothing that is scored (skn.ranking.reach)."""
    if Where.PROMPT not in wheres or not targets:
        return ""
    dead = sum(1 for t in targets if not reaches_completion(t.layer, t.slot, num_layers, prompt_len))
    if not dead:
        return ""
    where = "its effect at the prompt is exactly 0" if dead == len(targets) else "they add nothing to its effect at the prompt"
    share = "every neuron-slot of the set is" if dead == len(targets) else f"{dead} of the set's {len(targets)} neuron-slots are"
    return (f"{share} in the last layer ({num_layers - 1}) at a slot before the last, whose output no scored token "
            f"reads: {where} (--where all, or neurons of earlier layers, can matter)")


def parse_test(text: str) -> DepartureTest:
    try:
        return DepartureTest(text)
    except ValueError:
        raise UsageError(f"--test {text}: choose {', '.join(t.value for t in DepartureTest)}") from None


__all__ = ["ALPHA", "DepartureTest", "cannot_depart", "empirical_can_depart", "empirical_p", "inert_note", "log_t_p",
           "parse_test", "resolve_test"]
