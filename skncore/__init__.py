"""skn: find the neurons of a language model that carry a skill.

    import skn
    result = skn.run_probe(skn.ProbeRequest(model=skn.ModelRequest("Qwen/Qwen1.5-1.8B-Chat"),
                                            data=skn.DataRequest(data=("train.jsonl",)), metric="loss"))

or stage by stage:

    loaded = skn.load_model("Qwen/Qwen1.5-1.8B-Chat")
    trained = skn.train(loaded, skn.load_examples("train.jsonl"), skn.load_examples("val.jsonl"))
    result = skn.probe(loaded, trained.prompt, skn.load_examples("val.jsonl"), "loss")

any neuron on any text (one prompt-only pass), and a model already in memory:

    acts = skn.neuron_activations(loaded, trained.prompt, ["some text"], [(0, 5)], run=result)  # [K, N]
    loaded = skn.wrap_loaded("my-model", model, tokenizer)
"""

from skn.engine.activations import neuron_activations, run_activations
from skn.engine.api import probe, train
from skn.engine.probe_config import ProbeConfig
from skn.ranking.compare import Comparison, compare_runs, write_comparison
from skn.inputs.data import Example, Split, load_examples
from skn.statistics.folds import FoldAccumulator, FoldStats, assign_folds, plan_holdout
from skn.ranking.holdout import HeldOutR, HoldoutResult, rank_with_holdout
from skn.models.model import LoadedModel, load_model, wrap_loaded
from skn.statistics.passing import PassingCounts, count_passing
from skn.ranking.rank import Neuron, Reduce
from skn.files.result import ProbeResult, RunInfo
from skn.engine.request import DataRequest, ModelRequest, ProbeRequest, TrainRequest
from skn.engine.run import run_probe, run_train
from skn.files.probe_read import read_probe_run
from skn.engine.seeds import SeedsOutcome, run_seeds
from skn.statistics.stats import PearsonStats, merge
from skn.training.trainer import TrainConfig, TrainResult
from skn.version import __version__

__all__ = [
    "Comparison",
    "DataRequest",
    "Example",
    "FoldAccumulator",
    "FoldStats",
    "HeldOutR",
    "HoldoutResult",
    "LoadedModel",
    "ModelRequest",
    "Neuron",
    "PassingCounts",
    "PearsonStats",
    "ProbeConfig",
    "ProbeRequest",
    "ProbeResult",
    "Reduce",
    "RunInfo",
    "SeedsOutcome",
    "Split",
    "TrainConfig",
    "TrainResult",
    "TrainRequest",
    "__version__",
    "assign_folds",
    "compare_runs",
    "count_passing",
    "load_examples",
    "load_model",
    "merge",
    "neuron_activations",
    "plan_holdout",
    "probe",
    "rank_with_holdout",
    "read_probe_run",
    "run_activations",
    "run_probe",
    "run_seeds",
    "run_train",
    "train",
    "wrap_loaded",
    "write_comparison",
]
