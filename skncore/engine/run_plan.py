"""The memory plan of a run's request (skn.engine.memory), made from the config and the tokenized examples
before any weight loads: `skn probe --dry-run` prints it, and every run announces it before it starts."""

from __future__ import annotations

from collections.abc import Callable

from skn import zoo
from skn.statistics.covariates import parse_controls
from skn.inputs.examples_choice import ChosenExamples, choose_examples
from skn.models.hub import offline_unless_reachable
from skn.engine.memory import MemoryPlan, PlanUnavailable, Workload, advice, check_fits, plan_from_config
from skn.inputs.metrics import parse_metric
from skn.engine.preflight import check_model_path
from skn.engine.probe_config import holdout_plan
from skn.engine.request import ProbeRequest


def plan_memory(request: ProbeRequest, chosen: ChosenExamples) -> tuple[MemoryPlan, Workload]:
    """The memory plan of a run (skn.engine.memory) from the config and the tokenized examples; no weight loads."""
    model = request.model
    spec = parse_metric(request.metric or chosen.default_metric)
    with offline_unless_reachable(model.name):  # a cached hub model read at once when the hub cannot be reached
        return plan_from_config(
            str(zoo.default_model_path()) if model.bundled else model.name, model.trust_remote_code and not model.bundled,
            model.device, model.dtype, model.quantize, chosen.split.train + chosen.split.val, request.data.template,
            request.train.prompt_len, request.train.batch_size, training=not request.prompt,
            gradient_checkpointing=request.train.gradient_checkpointing, instruction_cache=request.train.instruction_cache,
            metric_after_pass=not spec.known_before_pass,
            null_permutations=request.probe.null.permutations,
            folds=holdout_plan(request.probe, len(chosen.split.val)).on,
            covariates=len(parse_controls(request.probe.control)), probe_examples=len(chosen.split.val),
            train_examples=len(chosen.split.train), neuron_module=model.neuron_module, revision=model.revision)


def memory_plan(request: ProbeRequest) -> MemoryPlan:
    """`skn probe --dry-run`: the plan of the run the request asks for, without loading a weight."""
    check_model_path(request.model.name, request.model.revision)
    return plan_memory(request, choose_examples(request.data, request.model.bundled))[0]


def announce_plan(request: ProbeRequest, chosen: ChosenExamples, notify: Callable[[str], None]) -> None:
    """The plan's line (or why there is none) and its advice, to `notify`; a run that will not fit stops here."""
    try:
        memory, work = plan_memory(request, chosen)
    except PlanUnavailable as unavailable:  # a model built by its own code, not on the meta device
        notify(str(unavailable))
        return
    notify(memory.line())
    check_fits(memory, work)  # a run that will not fit (on CUDA, or far from it on a CPU) stops here
    text = advice(memory, work)
    if text:
        notify(text)


__all__ = ["announce_plan", "memory_plan", "plan_memory"]
