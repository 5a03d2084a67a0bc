"""Helpers shared by the tests (one module, so no test imports another): tiny models built from configs
with fixed seeds, a character tokenizer made in process, paths into ../shared, a small data file, and the
independent float64 references the numbers are checked against."""

from __future__ import annotations

import copy
import json
import math
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
STORIES = SHARED / "models" / "stories260K-hf"

CHARS = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,:;?!'\"-+*=/()\n")
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", "<soft>"]


def char_tokenizer() -> Any:
    """A character-level fast tokenizer that adds BOS and has EOS and PAD."""
    from tokenizers import Tokenizer, models, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS + CHARS)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
        additional_special_tokens=["<soft>"],
    )


VOCAB = len(SPECIALS) + len(CHARS)


def tiny_model(arch: str, seed: int = 0, init_range: float = 0.02, window: int = 8) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, Qwen2Config

    torch.manual_seed(seed)
    if arch == "qwen2":
        config = Qwen2Config(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    elif arch == "llama":
        config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=40, num_hidden_layers=3,
                             num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256)
    elif arch == "gpt2":
        config = GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=256)
    elif arch == "gemma3":  # GeGLU (gelu-tanh gate), sliding-window layers: the default window of 8 is shorter than the rows
        from transformers import Gemma3TextConfig

        config = Gemma3TextConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=40, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=256,
                                  sliding_window=window, layer_types=["sliding_attention", "full_attention"])
    else:
        raise ValueError(arch)
    config.pad_token_id = 0
    config.initializer_range = init_range
    model = AutoModelForCausalLM.from_config(config)
    model.eval()
    return model


def tiny_loaded(arch: str, seed: int = 0, init_range: float = 0.02, window: int = 8) -> Any:
    from skn.models.model import wrap_loaded

    return wrap_loaded(f"tiny-{arch}", tiny_model(arch, seed, init_range, window), char_tokenizer(), torch.device("cpu"))



def save_model(model: torch.nn.Module, folder: Path) -> Path:
    """A tiny model and the character tokenizer as a Hugging Face folder."""
    model.save_pretrained(folder)  # type: ignore[operator]
    char_tokenizer().save_pretrained(folder)
    return folder


def model_folders(base: Path) -> tuple[Path, Path]:
    """Two saved tiny Qwen2 folders: a plain one, and one whose tokenizer's pad id is one past the embeddings."""
    model = save_model(tiny_model("qwen2"), base / "tiny-qwen2")
    pad_model = base / "pad-qwen2"
    tiny_model("qwen2").save_pretrained(pad_model)
    tokenizer = char_tokenizer()
    tokenizer.add_special_tokens({"pad_token": "[PAD]"})
    assert tokenizer.pad_token_id == VOCAB  # one past the embeddings
    tokenizer.save_pretrained(pad_model)
    return model, pad_model


def one_error(output: str, code: int, expected: int, *needles: str) -> str:
    """The bad-input matrix's checks on one CLI outcome: the exit code, no traceback, exactly one `error:` line
    holding every needle; returns that line."""
    assert code == expected, output
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


ANIMALS = ("cat", "dog", "bird")


def animal_word(i: int, seed: int) -> str:
    """The animal of example i in `animal_data(..., seed)`: the three in turn, in a seeded phase."""
    return ANIMALS[(i * 7 + seed) % 3]


def animal_data(path: Path, n: int, seed: int, extra: Callable[[int], dict[str, object]] | None = None) -> Path:
    """A .jsonl of n examples "the WORD is" / " a WORD" with an `animal` label and a `size` field in [0, 1), each
    record updated by `extra(i)` where given (the bad-input suites' data)."""
    with path.open("w") as f:
        for i in range(n):
            word = animal_word(i, seed)
            record: dict[str, object] = {"instruction": f"the {word} is", "completion": f" a {word}", "animal": word,
                                         "size": (i * 37 % 11) / 11}
            if extra is not None:
                record.update(extra(i))
            f.write(json.dumps(record) + "\n")
    return path


def write_data(path: Path, n: int, seed: int) -> Path:
    """A .jsonl of n examples with an `animal` label and a numeric `size` field."""
    rng = random.Random(seed)
    with path.open("w") as f:
        for i in range(n):
            word = rng.choice(["cat", "dog", "bird"])
            f.write(json.dumps({"instruction": f"the {word} is", "completion": f" a {word}", "animal": word, "size": rng.random()}) + "\n")
    return path


def probed_tiny_run(base: Path) -> Path:
    """base/R: a `skn probe --metric loss` run (FAST) of a tiny Qwen2 saved in base/tiny-qwen2, on 16 training
    and 12 validation examples of `write_data`; its run.json names the model, so `skn ablate` can load it."""
    from skn.cli.main import main

    model = base / "tiny-qwen2"
    tiny_model("qwen2").save_pretrained(model)  # type: ignore[operator]
    char_tokenizer().save_pretrained(model)
    train, val = write_data(base / "train.jsonl", 16, 0), write_data(base / "val.jsonl", 12, 1)
    out = base / "R"
    main(["probe", "--model", str(model), "--data", str(train), "--val-data", str(val), "--metric", "loss",
          "--out", str(out), *FAST])
    return out


def reference_r(acts: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Two-pass float64 Pearson r per column of acts [N, L, P, m]; NaN for constant columns."""
    x = acts.astype(np.float64)
    xc = x - x.mean(axis=0)
    yc = (y - y.mean()).astype(np.float64)
    cov = np.einsum("n,nlpm->lpm", yc, xc)
    sx = np.sqrt((xc**2).sum(axis=0))
    sy = math.sqrt((yc**2).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        r = cov / (sx * sy)
    r[sx == 0] = np.nan
    return r


def reference_token_nll(row: list[float], target: int) -> float:
    """One token's negative log-probability from its logits, in Python floats (float64), log-sum-exp shifted by the max."""
    top = max(row)
    return top + math.log(sum(math.exp(v - top) for v in row)) - row[target]


def reference_moments(acts: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two-pass float64 mean, M2 and co-moment with y [N] per column of acts [N, L, P, m]."""
    x = acts.astype(np.float64)
    mean = x.mean(axis=0)
    xc = x - mean
    return mean, (xc * xc).sum(axis=0), np.einsum("n,nlpm->lpm", y - y.mean(), xc)


def reference_metrics(loaded: Any, prompt: torch.Tensor, rows: Any) -> dict[str, np.ndarray]:
    """loss, confidence and correct per example, from a float64 copy of the model, one unpadded sequence
    per example laid out here (instruction | prompt | completion), with nothing of skn's batching or scoring:

        loss       = mean over completion tokens c_j of -log softmax(logits[t_j - 1])[c_j]
        confidence = mean over the same positions of max softmax(logits[t_j - 1])
        correct    = 1.0 when argmax logits[t_j - 1] == c_j for every j, else 0.0
    """
    model = copy.deepcopy(loaded.model).to(torch.float64)
    embed = model.get_input_embeddings()
    out: dict[str, list[float]] = {"loss": [], "confidence": [], "correct": []}
    for row in rows:
        instruction, completion = list(row.instruction), list(row.completion)
        p = int(prompt.shape[0])
        with torch.no_grad():
            pieces = [embed(torch.tensor([instruction])), prompt.to(torch.float64)[None], embed(torch.tensor([completion]))]
            logits = model(inputs_embeds=torch.cat(pieces, dim=1)).logits[0].numpy()
        first = len(instruction) + p  # the first completion token's position
        predicting = logits[first - 1 : first - 1 + len(completion)]
        shifted = predicting - predicting.max(axis=1, keepdims=True)
        logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        target = np.array(completion)
        out["loss"].append(float(-logp[np.arange(len(completion)), target].mean()))
        out["confidence"].append(float(np.exp(logp).max(axis=1).mean()))
        out["correct"].append(float(np.all(predicting.argmax(axis=1) == target)))
    return {name: np.array(values, dtype=np.float64) for name, values in out.items()}


FAST = ["--steps", "3", "--eval-every", "3", "--prompt-len", "4", "--batch-size", "8", "--top-k", "5"]
"""CLI options that keep a whole `skn probe` on a tiny model to a second or two."""


def run_main(args: list[str], capsys: Any) -> tuple[int, str]:
    """`skn ARGS` through the console entry point: (exit code, stdout + stderr)."""
    import pytest

    from skn.cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        main(args)
        raise SystemExit(0)
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out + captured.err


# ---------------------------------------------------------------- random examples, hooked activations, ablation data


def examples(n: int, seed: int = 0) -> list[Any]:
    """n seeded examples of ragged instructions and completions, with a numeric field `score` and an index `i`."""
    from skn.inputs.data import Example

    rng = random.Random(seed)
    out = []
    for i in range(n):
        instruction = "".join(rng.choice("abcde ") for _ in range(rng.randint(1, 12)))  # ragged lengths
        completion = "".join(rng.choice("xyz") for _ in range(rng.randint(1, 4)))
        out.append(Example(instruction, completion, {"score": rng.random(), "i": i}, f"t:{i}"))
    return out


def hooked_activations(loaded: object, prompt: torch.Tensor, rows: list, with_completion: bool) -> np.ndarray:
    """[N, L, P, m] from one unpadded forward per example and plain pre-hooks."""
    from skn.inputs.layout import make_batch, pad_id
    from skn.training.prompt import splice

    prompt_len = int(prompt.shape[0])
    per_example = []
    for row in rows:
        batch = make_batch([row], prompt_len, pad_id(loaded.tokenizer), with_completion)  # type: ignore[attr-defined]
        seen: dict[int, torch.Tensor] = {}
        handles = [
            m.register_forward_pre_hook(lambda mod, args, l=l: seen.__setitem__(l, args[0].detach().clone()))
            for l, m in enumerate(loaded.sites.modules)  # type: ignore[attr-defined]
        ]
        with torch.no_grad():
            loaded.model(inputs_embeds=splice(loaded, batch, prompt), attention_mask=batch.attention_mask)  # type: ignore[arg-type, attr-defined]
        for h in handles:
            h.remove()
        start = int(batch.prompt_start[0])
        per_example.append(np.stack([seen[l][0, start : start + prompt_len].double().numpy() for l in sorted(seen)]))
    return np.stack(per_example)


ABLATION_P = 3  # the prompt length of `ablation_data`


def ablation_data(loaded: object, n: int = 12, metric: str = "loss", seed: int = 0) -> tuple[object, torch.Tensor]:
    """skn.ablation.ablate's prepared data on `examples(n, seed)` and the prompt it uses (P = ABLATION_P)."""
    from skn.ablation.ablate import prepare
    from skn.engine.api import encode
    from skn.inputs.layout import Template
    from skn.inputs.metrics import parse_metric
    from skn.training.prompt import init_prompt

    data = examples(n, seed)
    prompt = init_prompt(loaded, ABLATION_P, seed=0)  # type: ignore[arg-type]
    rows = encode(loaded, data, Template.PLAIN, ABLATION_P)  # type: ignore[arg-type]
    return prepare(loaded, prompt, rows, data, parse_metric(metric), (), (), False, batch_size=5), prompt  # type: ignore[arg-type]


def plant_neuron(loaded: object, neuron: int = 7) -> None:
    """Layer 0's neuron `neuron` fires strongly and writes a large vector into the residual stream."""
    mlp = loaded.model.model.layers[0].mlp  # type: ignore[attr-defined]
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        mlp.gate_proj.weight[neuron] = torch.randn(mlp.gate_proj.weight.shape[1], generator=g) * 2.0
        mlp.up_proj.weight[neuron] = torch.randn(mlp.up_proj.weight.shape[1], generator=g) * 2.0
        mlp.down_proj.weight[:, neuron] = torch.randn(mlp.down_proj.weight.shape[0], generator=g) * 3.0


def length_examples(n: int, seed: int) -> list[Any]:
    """Ragged instructions; the metric `length` (their length plus noise) is tracked by many neurons."""
    from skn.inputs.data import Example

    rng = random.Random(seed)
    out = []
    for i in range(n):
        instruction = "".join(rng.choice("abcde ") for _ in range(rng.randint(1, 12)))
        completion = "".join(rng.choice("xyz") for _ in range(rng.randint(1, 4)))
        out.append(Example(instruction, completion, {"length": len(instruction) + rng.random()}, f"t:{i}"))
    return out


# ---------------------------------------------------------------- headless Chromium (the report's browser checks)

# Debian's package; .ci/run installs it (`apt-get install -y chromium`).
CHROMIUM_NAMES = ("chromium", "chromium-browser")
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-quic", "--hide-scrollbars",
)


def chromium() -> str:
    """The headless browser's path, or "" where none is installed."""
    import shutil

    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return ""


def run_chromium(binary: str, profile: Path, *args: str) -> Any:
    """One headless Chromium call with its own profile folder: the CompletedProcess (text output)."""
    import subprocess

    return subprocess.run([binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=90, check=False)


class Interrupted(BaseException):  # as KeyboardInterrupt: not a failure of a stage
    pass


class StopAfter:
    """A progress sink that raises `Interrupted` once `examples` examples of the probing pass are done (mid-pass,
    after a checkpoint or between two)."""

    def __init__(self, examples: int) -> None:
        self.examples = examples

    @contextmanager
    def task(self, description: str, total: int) -> Iterator[Callable[[int, str], None]]:
        done = [0]

        def advance(steps: int = 1, note: str = "") -> None:
            done[0] += steps
            if description == "probing" and done[0] >= self.examples:
                raise Interrupted

        yield advance


BENCH = Path(__file__).resolve().parents[1] / "bench"


def bench_script(name: str) -> ModuleType:
    """bench/NAME.py as a module, registered under NAME (its dataclasses look their module up), with bench/ on
    sys.path for the scripts that import their neighbours by name (paper_tables: paper_runs, replicate_paper)."""
    import importlib.util
    import sys

    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
