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

from skn.activations import neuron_activations, run_activations
from skn.api import probe, train
from skn.probe_config import ProbeConfig
from skn.compare import Comparison, compare_runs, write_comparison
from skn.data import Example, Split, load_examples
from skn.folds import FoldAccumulator, FoldStats, assign_folds, plan_holdout
from skn.holdout import HeldOutR, HoldoutResult, rank_with_holdout
from skn.model import LoadedModel, load_model, wrap_loaded
from skn.passing import PassingCounts, count_passing
from skn.rank import Neuron, Reduce
from skn.result import ProbeResult, RunInfo
from skn.request import DataRequest, ModelRequest, ProbeRequest, TrainSettings
from skn.run import run_probe, run_train
from skn.probe_read import read_probe_run
from skn.seeds import SeedsOutcome, run_seeds
from skn.stats import PearsonStats, merge
from skn.trainer import TrainConfig, TrainResult
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
    "TrainSettings",
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
