"""What a probe records of its own run in run.json: its settings and the versions (`probe_info`); each
feature writes its own summary (skn.features)."""

from __future__ import annotations

import platform

import torch

from skn.statistics.backend import resolve_backend
from skn.inputs.layout import resolve_template
from skn.inputs.metrics import MetricSpec
from skn.models.model import LoadedModel
from skn.engine.probe_config import ProbeConfig
from skn.files.result import ProbeConfigRecord, RunInfo
from skn.version import __version__


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


__all__ = ["probe_info", "versions"]
