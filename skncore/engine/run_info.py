"""What a probe records of its own run in run.json: its settings and the versions (`probe_info`), and the
permutation null's summary with how many neurons pass its threshold (`null_summary`, `with_passing`)."""

from __future__ import annotations

import math
import platform
from collections.abc import Mapping
from dataclasses import replace

import torch

from skn.statistics.backend import resolve_backend
from skn.inputs.layout import resolve_template
from skn.inputs.metrics import MetricSpec
from skn.models.model import LoadedModel
from skn.statistics.null_verdict import NullResult
from skn.engine.probe_config import ProbeConfig
from skn.files.result import ProbeResult, ProbeConfigRecord, RunInfo
from skn.version import __version__


def with_passing(result: ProbeResult) -> ProbeResult:
    """run.json's "null" gains "passing": how many neurons pass the threshold, per layer and in all (skn.statistics.passing)."""
    passing = result.passing
    summary = result.info.extra.get("null")
    if passing is None or not isinstance(summary, Mapping):
        return result
    extra = {**result.info.extra, "null": {**summary, "passing": passing.to_json()}}
    return replace(result, info=replace(result.info, extra=extra))


def null_summary(null: NullResult | None) -> dict[str, object] | None:
    """run.json's "null": what the permutation null concluded (None: it was off)."""
    if null is None:
        return None
    return {
        "permutations": null.permutations,
        "mode": null.mode.value,
        "alpha": null.alpha,
        "threshold": null.threshold if math.isfinite(null.threshold) else None,
        "n_significant": null.n_significant,
        "top_k": len(null.significant),
    }


def versions() -> dict[str, str]:
    import transformers

    return {"skn": __version__, "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version()}


def probe_info(
    loaded: LoadedModel, spec: MetricSpec, config: ProbeConfig, n_val: int, top_k: int, timings: dict[str, float]
) -> RunInfo:
    """What a probe knows of its own run; `skn.engine.run.run_probe` adds the data, the training and the seed."""
    return RunInfo(
        model=loaded.name,
        metric=spec.text,
        n_val=n_val,
        layers=loaded.sites.num_layers,
        width=loaded.sites.width,
        top_k=top_k,
        device=str(loaded.device),
        dtype=str(loaded.dtype).replace("torch.", ""),
        neuron_module=loaded.sites.names[0].replace(".0.", ".{i}.", 1) if loaded.sites.names else "",
        weights=loaded.weights,
        probe_config=ProbeConfigRecord(
            batch_size=config.batch_size,
            top_k=config.top_k,
            n_exemplars=config.n_exemplars,
            reduce=config.reduce.value,
            backend=resolve_backend(config.backend, loaded.device).value,
            template=resolve_template(config.template, loaded.tokenizer).value,
            holdout=config.holdout,
            score=config.score.value,
            null_permutations=config.null.permutations,
            alpha=config.null.alpha,
            null_seed=config.null.seed,
        ),
        versions=versions(),
        timings=timings,
    )


__all__ = ["null_summary", "probe_info", "versions", "with_passing"]
