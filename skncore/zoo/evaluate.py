"""Measure the bundled model on REAL BIG-bench items: the last-digit shortcut, with and without a probe.

    python -m skn.zoo.evaluate --bigbench ../shared/data/bigbench_arithmetic

For each multiplication subtask it prints
- multiple-choice accuracy (each choice scored by its summed NLL + EOS after the 20 `<soft>` slots),
  on items with and without the last-digit shortcut;
- a self-contained check of what the probe should find, with the prompt left at the placeholder's
  embedding (0 prompt steps): Pearson r between every neuron's activation (input of down_proj) at every
  prompt slot and the per-example loss (mean NLL over the completion and EOS), the top neuron by |r| at
  its best slot, and the AUROC of that activation, oriented by the sign of r (higher loss = no shortcut),
  for telling no-shortcut from shortcut items. The ranking never sees the shortcut flag.

With `--run RUN` it checks a probe run instead (e.g. `skn probe`'s default run on generated items): the
run's own top neurons and prompt on the real items, each neuron's shortcut AUROC and the loss's.

This is a measuring tool for bench/README.md, not part of `skn probe`.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from skn.inputs.data import Example
from skn.inputs.layout import pad_id
from skn.models.tokenizer import Tokenizer, token_id
from skn.zoo import PLACEHOLDER, default_model_path
from skn.zoo.multiple_choice import batch_tensors, encode_pretraining, evaluate, token_nll


@dataclass(frozen=True)
class NeuronCheck:
    layer: int
    index: int
    position: int
    r: float
    auroc_shortcut: float  # activation * sign(r) separating no-shortcut (positive) from shortcut items


def auroc(score: np.ndarray, positive: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties counted half (Mann-Whitney U with mid-ranks)."""
    pos, neg = score[positive], score[~positive]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    ranks = _midranks(np.concatenate([pos, neg]))
    u = ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)))


def _midranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=np.float64)
    sorted_values = values[order]
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and sorted_values[j + 1] == sorted_values[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def activations_and_loss(
    model: nn.Module, tokenizer: Tokenizer, examples: Sequence[Example], prompt_len: int, batch_size: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """[N, L, P, m] activations at the prompt slots (float64) and [N] per-example mean completion NLL."""
    placeholder = token_id(tokenizer, PLACEHOLDER)
    pad = pad_id(tokenizer)
    layers: Sequence[nn.Module] = list(model.model.layers)  # type: ignore[union-attr,arg-type]
    captured: list[Tensor] = []

    def hook(_module: nn.Module, inputs: tuple[Tensor, ...]) -> None:
        captured.append(inputs[0].detach())

    handles = [layer.get_submodule("mlp.down_proj").register_forward_pre_hook(hook) for layer in layers]
    acts: list[np.ndarray] = []
    losses: list[np.ndarray] = []
    model.eval()
    try:
        with torch.no_grad():
            for lo in range(0, len(examples), batch_size):
                rows = [encode_pretraining(tokenizer, e) for e in examples[lo : lo + batch_size]]
                ids, mask, targets = batch_tensors(rows, prompt_len, placeholder, pad)
                captured.clear()
                nll = token_nll(model, ids, mask, targets)  # the forward fills `captured`
                counts = (targets != -100).sum(dim=1)
                losses.append((nll.sum(dim=1) / counts).double().numpy())
                starts = torch.tensor([len(r.instruction) for r in rows])
                index = starts[:, None] + torch.arange(prompt_len)[None, :]  # [B, P]
                per_layer = [
                    torch.gather(a, 1, index[:, :, None].expand(-1, -1, a.shape[-1])) for a in captured
                ]  # L x [B, P, m]
                acts.append(torch.stack(per_layer, dim=1).double().numpy())
    finally:
        for handle in handles:
            handle.remove()
    return np.concatenate(acts), np.concatenate(losses)


def top_neuron(acts: np.ndarray, metric: np.ndarray, shortcut: np.ndarray) -> NeuronCheck:
    """The neuron with the largest |r| at its best slot (NaN for constant activations ranks last)."""
    a = acts - acts.mean(axis=0)
    y = metric - metric.mean()
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.einsum("nlpm,n->lpm", a, y) / np.sqrt((a**2).sum(axis=0) * (y**2).sum())
    score = np.where(np.isnan(r), -1.0, np.abs(r))
    layer, position, neuron = np.unravel_index(int(np.argmax(score)), score.shape)
    value = float(r[layer, position, neuron])
    activation = acts[:, layer, position, neuron] * np.sign(value)
    return NeuronCheck(int(layer), int(neuron), int(position), value, auroc(activation, ~shortcut))


@dataclass(frozen=True)
class ProbeCheck:
    """skn's own probe (skn.engine.api) on real BIG-bench items, after training a prompt on generated ones."""

    subtask: str
    n: int
    prompt_steps: int
    best_val_loss: float
    neuron: dict[str, object]
    auroc_shortcut: float  # the top neuron's activation * sign(r): no-shortcut (positive) vs shortcut
    best_auroc_top10: float  # the best of the top-10 neurons, for context only
    seconds: float


def probe_bigbench(
    model: Path, bigbench: Path, digits: Sequence[int], steps: int, lr: float, train_size: int, seed: int
) -> list[ProbeCheck]:
    """Train a prompt (init: the placeholder's embedding) on generated items, then probe each BIG-bench
    multiplication subtask with metric `loss`; the shortcut flag is used only to score the result."""
    import time

    from skn.engine.api import probe, train

    from skn.engine.probe_config import ProbeConfig
    from skn.models.model import load_model
    from skn.training.prompt import PromptInit
    from skn.tasks.arithmetic import load_bigbench, to_example
    from skn.training.trainer import TrainConfig
    from skn.zoo import default_examples

    loaded = load_model(str(model), device="cpu")
    split = default_examples(train_size, 128)
    start = time.perf_counter()
    trained = train(loaded, split.train, split.val, TrainConfig(steps=steps, lr=lr, seed=seed, init=PromptInit(PLACEHOLDER)))
    out = []
    for d in digits:
        items = load_bigbench(bigbench / f"{d}_digit_multiplication" / "task.json")
        examples = [to_example(item, seed) for item in items]
        result = probe(loaded, trained.prompt, examples, "loss", ProbeConfig(top_k=10, batch_size=64))
        shortcut = np.array([bool(e.meta["last_digit_shortcut"]) for e in examples])
        aucs = [
            auroc(result.top_activations[k].double().numpy() * np.sign(n.r), ~shortcut)
            for k, n in enumerate(result.neurons)
        ]
        top = result.neurons[0]
        out.append(ProbeCheck(
            subtask=f"{d}_digit_multiplication", n=len(examples), prompt_steps=trained.steps_done,
            best_val_loss=trained.best_val_loss,
            neuron={"layer": top.layer, "neuron": top.index, "position": top.position, "r": top.r},
            auroc_shortcut=aucs[0], best_auroc_top10=max(aucs), seconds=time.perf_counter() - start,
        ))
        print(f"probe {out[-1]}", flush=True)
    return out


def check_run(run_dir: Path, model: Path, bigbench: Path, digits: Sequence[int], seed: int) -> dict[str, object]:
    """A probe run's own top neurons (ranked on ITS validation items, e.g. `skn probe`'s generated ones),
    with its prompt, on the real BIG-bench items: each neuron's AUROC for no-shortcut vs shortcut items
    (activation * sign(r)), and the AUROC of the per-item loss under that prompt. Nothing is re-ranked."""
    from skn.engine.api import encode
    from skn.inputs.layout import make_batch
    from skn.models.model import batch_pad_id, load_model
    from skn.engine.probe import exemplar_pass
    from skn.files.probe_read import read_probe_run, run_prompt, run_template
    from skn.training.scoring import completion_scores
    from skn.tasks.arithmetic import load_bigbench, to_example

    run = read_probe_run(run_dir)
    prompt = run_prompt(run_dir, run).prompt
    loaded = load_model(str(model), device="cpu")
    template = run_template(run)
    out: dict[str, object] = {"run": str(run_dir), "neurons": [f"{n.layer}.{n.index}@{n.position}" for n in run.neurons]}
    for d in digits:
        items = load_bigbench(bigbench / f"{d}_digit_multiplication" / "task.json")
        examples = [to_example(item, seed) for item in items]
        rows = encode(loaded, examples, template, int(prompt.shape[0]))
        shortcut = np.array([bool(e.meta["last_digit_shortcut"]) for e in examples])
        acts = exemplar_pass(loaded, prompt, rows, run.neurons, 64).double().numpy()
        with torch.no_grad():
            loss = np.concatenate([completion_scores(loaded, make_batch(rows[i : i + 64], int(prompt.shape[0]),
                                                                        batch_pad_id(loaded)), prompt).loss.numpy()
                                   for i in range(0, len(rows), 64)])
        aucs = [auroc(acts[k] * np.sign(n.r), ~shortcut) for k, n in enumerate(run.neurons)]
        out[f"{d}_digit_multiplication"] = {"n": len(examples), "n_shortcut": int(shortcut.sum()),
                                             "auroc_loss": auroc(loss, ~shortcut), "auroc_top_neurons": aucs}
        print(f"{d}-digit (BIG-bench, n={len(examples)}): AUROC(loss) {auroc(loss, ~shortcut):.3f}; the run's top "
              f"neurons' AUROC " + ", ".join(f"{a:.3f}" for a in aucs), flush=True)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from skn.tasks.arithmetic import load_bigbench, to_example

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=default_model_path())
    parser.add_argument("--bigbench", type=Path, required=True, help="the BIG-bench arithmetic folder")
    parser.add_argument("--digits", default="1,2,3,4,5")
    parser.add_argument("--seed", type=int, default=0, help="choice-order seed of to_example")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--probe-steps", type=int, default=0, help="> 0: also run skn's probe (skn.engine.api)")
    parser.add_argument("--probe-lr", type=float, default=3e-3)
    parser.add_argument("--probe-train-size", type=int, default=256)
    parser.add_argument("--run", type=Path, default=None, help="a probe run: check ITS top neurons and prompt only")
    args = parser.parse_args(argv)
    digit_list = [int(d) for d in args.digits.split(",")]
    if args.run is not None:
        record = check_run(args.run, args.model, args.bigbench, digit_list, args.seed)
        if args.json is not None:
            args.json.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        return
    if args.probe_steps > 0:
        checks = probe_bigbench(args.model, args.bigbench, digit_list, args.probe_steps, args.probe_lr,
                                args.probe_train_size, args.seed)
        if args.json is not None:
            args.json.with_suffix(".probe.json").write_text(
                json.dumps([asdict(c) for c in checks], indent=2) + "\n", encoding="utf-8")
    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(str(args.model))
    model = AutoModelForCausalLM.from_pretrained(str(args.model))
    prompt_len = 20
    out: dict[str, object] = {}
    for digits in digit_list:
        items = load_bigbench(args.bigbench / f"{digits}_digit_multiplication" / "task.json")
        examples = [to_example(item, args.seed) for item in items]
        report = evaluate(model, tokenizer, examples, prompt_len)
        acts, loss = activations_and_loss(model, tokenizer, examples, prompt_len)
        shortcut = np.array([bool(e.meta["last_digit_shortcut"]) for e in examples])
        check = top_neuron(acts, loss, shortcut)
        loss_gap = float(loss[~shortcut].mean() - loss[shortcut].mean())
        print(f"{digits}-digit multiplication (BIG-bench, n={len(examples)}): {report.line()}")
        print(f"    loss no-shortcut minus shortcut {loss_gap:+.3f}; AUROC(loss) "
              f"{auroc(loss, ~shortcut):.3f}; top neuron (0 prompt steps) {asdict(check)}", flush=True)
        out[f"{digits}_digit_multiplication"] = {
            "mc": asdict(report), "loss_gap": loss_gap, "auroc_loss": auroc(loss, ~shortcut), "top_neuron": asdict(check)
        }
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
