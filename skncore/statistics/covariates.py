"""The covariates of `--control`: what each NAME is, its value on every example, and whether a set of them
can be partialled out (none constant, none a linear function of the others). skn.statistics.partial holds the partial r
given them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

import torch
from torch import Tensor

from skn.inputs.data import Example
from skn.errors import InternalError, UsageError
from skn.inputs.layout import Encoded
from skn.inputs.metrics import MetricKind, metric_before_pass, parse_metric
from skn.statistics.stats import STAT_DTYPE

COLLINEAR = 1e-8  # a covariate (or the metric) whose residual variance on the others is below this share is collinear
MAX_COVARIATES = 8


class CovariateKind(Enum):
    FIELD = "field"  # a numeric metadata field, or NAME==VALUE (parsed by skn.inputs.metrics)
    INSTRUCTION_TOKENS = "instruction_tokens"  # tokens before the soft prompt (template and BOS included)
    COMPLETION_TOKENS = "completion_tokens"  # completion tokens, EOS included (what the loss averages over)


_OWN = {k.value: k for k in CovariateKind if k is not CovariateKind.FIELD}


@dataclass(frozen=True)
class Covariate:
    """One `--control` NAME: skn's own per-example count, or a field read as a metric of its kind is."""

    text: str
    kind: CovariateKind

    @property
    def needs_tokens(self) -> bool:
        return self.kind is not CovariateKind.FIELD


def parse_controls(texts: Sequence[str]) -> tuple[Covariate, ...]:
    """`--control A,B --control C` -> (A, B, C). A NAME is `instruction_tokens`, `completion_tokens`, a numeric
    field (NAME or field:NAME) or NAME==VALUE, parsed as `--metric` parses them."""
    names = [part.strip() for text in texts for part in text.split(",")]
    if any(not n for n in names):
        raise UsageError(f"--control {','.join(texts)}: an empty name (write NAME[,NAME...])")
    out = []
    for name in names:
        if name in _OWN:
            out.append(Covariate(name, _OWN[name]))
            continue
        spec = parse_metric(name)
        if spec.kind not in (MetricKind.FIELD, MetricKind.EQUALS):
            raise UsageError(f"--control {name}: a covariate is a numeric field, FIELD==VALUE, instruction_tokens or "
                             f"completion_tokens (write field:{name} for a field of that name)")
        out.append(Covariate(name, CovariateKind.FIELD))
    if len({c.text for c in out}) != len(out):
        raise UsageError(f"--control {','.join(names)}: a covariate is named twice")
    if len(out) > MAX_COVARIATES:
        raise UsageError(f"--control: at most {MAX_COVARIATES} covariates, got {len(out)}")
    return tuple(out)


def covariate_values(covariates: Sequence[Covariate], examples: Sequence[Example],
                     rows: Sequence[Encoded] | None = None) -> Tensor:
    """[N, q] float64: each covariate on each example (`rows`, the encoded examples, for the token counts)."""
    columns = []
    for c in covariates:
        if c.kind is CovariateKind.FIELD:
            columns.append(metric_before_pass(parse_metric(c.text), examples))
            continue
        if rows is None:
            raise InternalError(f"covariate {c.text} needs the encoded examples")
        lengths = [len(r.instruction) if c.kind is CovariateKind.INSTRUCTION_TOKENS else len(r.completion) for r in rows]
        columns.append(torch.tensor(lengths, dtype=STAT_DTYPE))
    return torch.stack(columns, dim=1) if columns else torch.zeros(len(examples), 0, dtype=STAT_DTYPE)


def check_design(names: Sequence[str], z: Tensor, where: str = "") -> None:
    """A constant covariate, or one that is (nearly) a linear function of the others, is an error naming it."""
    place = f" on the {where}" if where else ""
    n = int(z.shape[0])
    for j, name in enumerate(names):
        column = z[:, j]
        if n and bool((column == column[0]).all()):
            raise UsageError(f"--control {name} is constant ({float(column[0]):g}) over the {n} validation examples{place}: "
                             "it explains nothing; drop it")
    zc = z - z.mean(dim=0)
    d = torch.sqrt((zc * zc).sum(dim=0))
    for j, name in enumerate(names):
        if j == 0:
            continue
        # the share of z_j's variance left after regressing it on the earlier covariates
        basis = zc[:, :j] / d[:j]
        coef = torch.linalg.lstsq(basis, zc[:, j : j + 1] / d[j]).solution
        left = float(((zc[:, j : j + 1] / d[j] - basis @ coef) ** 2).sum())
        if left < COLLINEAR:
            raise UsageError(f"--control {name} is collinear with {', '.join(names[:j])} (R^2 = {1 - left:.10f}){place}: "
                             "drop one of them")


def check_controls(names: Sequence[str], z: Tensor, confirm: Tensor | None) -> None:
    """`check_design` on all examples and, with a holdout, on each fold (each fold's partial r needs it)."""
    check_design(names, z)
    if confirm is not None:
        check_design(names, z[~confirm], "selection fold")
        check_design(names, z[confirm], "confirmation fold")


__all__ = [
    "COLLINEAR",
    "MAX_COVARIATES",
    "Covariate",
    "CovariateKind",
    "check_controls",
    "check_design",
    "covariate_values",
    "parse_controls",
]
