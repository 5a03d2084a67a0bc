"""One prompt-training step: skn (instruction cache, split forward, full forward) against PEFT prompt tuning.

Same model (random Qwen2 8 layers x 512 hidden x 1376 FFN, vocab 8000, as bench/probe_overhead.py),
same rows, batch 8, P = 20, AdamW lr 3e-3. A step = forward + backward + optimizer.step() on one
batch. skn cached: the split with each item's instruction keys and values kept from its first step
(skn.training.instruction_cache, what the trainer does: across epochs an item's instruction runs once), so a step runs
the prompt and the completion only. PEFT: `get_peft_model(model, PromptTuningConfig(num_virtual_tokens=20))`,
its 20 virtual tokens prepended, labels -100 on the instruction. The four are alternated in one process for
--rounds rounds of --steps steps each; the median round time of each is reported, with ratios.
Peak memory: the CUDA peak where there is a GPU, else the growth of the process's peak RSS over
the first step of each (a rough figure on the CPU).

Shapes: `bench` = instructions of 6-14 tokens, 4 completion tokens + EOS (probe_overhead's rows);
`hans` = instructions of ~60 tokens (55-65), 2 completion tokens + EOS.
Usage: python bench/train_step.py [--shape bench|hans|both] [--rounds 5] [--steps 3]   (needs `pip install skn[bench]`)
       python bench/train_step.py --model MODEL [--rounds 5] [--steps 3]   a real model: cached, split and full steps
       python bench/train_step.py --eval [--shape ...]   one validation evaluation: full, split, split with kept prefixes
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from skn.inputs.layout import Batch
    from skn.models.model import LoadedModel


def build(device: torch.device) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM, Qwen2Config

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=8000, hidden_size=512, intermediate_size=1376, num_hidden_layers=8,
                         num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=512)
    return AutoModelForCausalLM.from_config(config).to(device).eval()


def rows(shape: str, n: int) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    gen = torch.Generator().manual_seed(1)
    lo, hi, k = (6, 15, 4) if shape == "bench" else (55, 66, 2)
    out = []
    for _ in range(n):
        length = int(torch.randint(lo, hi, (1,), generator=gen))
        instruction = tuple(int(t) for t in torch.randint(2, 8000, (length,), generator=gen))
        out.append((instruction, tuple(int(t) for t in torch.randint(2, 8000, (k,), generator=gen)) + (1,)))
    return out


def skn_step(loaded: LoadedModel, batch: Batch, mode: str) -> Callable[[], None]:
    """mode: cached (the split with the instruction cache), split, or full."""
    from skn.training.scoring import completion_scores
    from skn.training.instruction_cache import InstructionCache
    from skn.training.split_forward import ForwardChoice, StepForward, step_scores

    width = int(loaded.input_embeddings.weight.shape[1])
    prompt = (torch.randn(20, width, device=loaded.device) * 0.02).requires_grad_(True)
    optimizer = torch.optim.AdamW([prompt], lr=3e-3)
    choice = ForwardChoice(StepForward.FULL if mode == "full" else StepForward.SPLIT)
    cache = InstructionCache(1 << 30)
    items = list(range(batch.size))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        if mode == "full":
            loss = completion_scores(loaded, batch, prompt).mean_loss
        else:
            prefix = cache.prefix(loaded, batch, items, prompt) if mode == "cached" else None
            loss = step_scores(loaded, batch, prompt, choice, prefix=prefix).mean_loss
        loss.backward()
        optimizer.step()

    return step


def bench_loaded(model: torch.nn.Module, data: list, device: torch.device) -> tuple[LoadedModel, Batch]:
    from skn.inputs.layout import Encoded, make_batch
    from skn.models.model import wrap_loaded

    loaded = wrap_loaded("bench-qwen2", model, SimpleNamespace(pad_token_id=0, eos_token_id=1), device)
    return loaded, make_batch([Encoded(i, c) for i, c in data], 20, 0)


def peft_step(model: torch.nn.Module, data: list, device: torch.device) -> Callable[[], None]:
    from peft import PromptTuningConfig, TaskType, get_peft_model

    peft_model = get_peft_model(model, PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=20))
    peft_model.eval()
    width = max(len(i) + len(c) for i, c in data)
    ids = torch.zeros((len(data), width), dtype=torch.int64)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for b, (i, c) in enumerate(data):
        seq = i + c
        ids[b, : len(seq)] = torch.tensor(seq)
        mask[b, : len(seq)] = 1
        labels[b, len(i) : len(seq)] = torch.tensor(c)
    ids, mask, labels = ids.to(device), mask.to(device), labels.to(device)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=3e-3)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        peft_model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        optimizer.step()

    return step


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_of(step: Callable[[], None], device: torch.device) -> float:
    """MiB: CUDA peak during one step above what was allocated before it; on the CPU ru_maxrss growth."""
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        sync(device)
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    step()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024


def run(shape: str, rounds: int, steps: int, device: torch.device) -> None:
    data = rows(shape, 8)
    model = build(device)
    for p in model.parameters():
        p.requires_grad_(False)
    loaded, batch = bench_loaded(model, data, device)
    steps_by_name = {f"skn {mode}": skn_step(loaded, batch, mode) for mode in ("cached", "split", "full")}
    steps_by_name["peft"] = peft_step(model, data, device)  # wraps the same (frozen) model
    med, peaks = alternate(steps_by_name, rounds, steps, device)
    print(f"shape={shape} device={device.type} batch=8 P=20 rounds={rounds} steps/round={steps}")
    for name in steps_by_name:
        print(f"  {name:10s} {med[name] * 1e3:8.1f} ms/step  {med[name] / med['peft']:5.2f}x peft  peak {peaks[name]:8.1f} MiB")


def alternate(steps_by_name: dict[str, Callable[[], None]], rounds: int, steps: int,
              device: torch.device) -> tuple[dict[str, float], dict[str, float]]:
    """The median seconds per step of each, alternated round by round, and each one's peak (MiB)."""
    peaks = {name: peak_of(fn, device) for name, fn in steps_by_name.items()}
    times: dict[str, list[float]] = {name: [] for name in steps_by_name}
    for _ in range(rounds):
        for name, fn in steps_by_name.items():
            sync(device)
            t0 = time.perf_counter()
            for _ in range(steps):
                fn()
            sync(device)
            times[name].append((time.perf_counter() - t0) / steps)
    return {name: statistics.median(v) for name, v in times.items()}, peaks


def run_model(name: str, rounds: int, steps: int, device: torch.device) -> None:
    """A real model (a Hugging Face folder or a GGUF file, loaded as `skn probe --model` loads it) on one batch of
    16 generated BIG-bench-style arithmetic items (the paper runs' batch, the chat template where the tokenizer has
    one): the split with the instruction cache, the split, and the full forward, alternated."""
    from skn.engine.encoding import encode
    from skn.inputs.layout import Template, make_batch
    from skn.models.model import batch_pad_id, load_model
    from skn.tasks import get_task
    from skn.training.split_forward import columns_needed, split_support

    loaded = load_model(name, device=device.type)
    examples = get_task("arithmetic").generate(0)[::97][:16]
    rows = list(encode(loaded, examples, Template.AUTO, 20))
    batch = make_batch(rows, 20, batch_pad_id(loaded))
    support = split_support(loaded, columns_needed(rows, 20))
    steps_by_name = {f"skn {mode}": skn_step(loaded, batch, mode) for mode in ("cached", "split", "full")}
    med, peaks = alternate(steps_by_name, rounds, steps, device)
    lengths = sorted(len(r.instruction) for r in rows)
    print(f"model={name} device={device.type} batch=16 P=20 instructions {lengths[0]}-{lengths[-1]} tokens "
          f"rounds={rounds} steps/round={steps}; skn's choice: {support.forward.value} {support.reason}")
    for key in steps_by_name:
        print(f"  {key:10s} {med[key] * 1e3:8.1f} ms/step  {med[key] / med['skn full']:5.2f}x full  peak {peaks[key]:8.1f} MiB")


def run_eval(shape: str, rounds: int, device: torch.device, n_rows: int = 64) -> None:
    """One validation-loss evaluation (as the trainer runs every --eval-every steps) of n_rows rows: the full
    forward, the split without kept prefixes, and the split with the prefixes kept from the first evaluation
    (skn.training.split_forward.PrefixCache), alternated; median of `rounds`."""
    from skn.inputs.layout import Encoded
    from skn.models.model import wrap_loaded
    from skn.training.split_forward import PrefixCache
    from skn.training.trainer import validation_loss

    model = build(device)
    for p in model.parameters():
        p.requires_grad_(False)
    loaded = wrap_loaded("bench-qwen2", model, SimpleNamespace(pad_token_id=0, eos_token_id=1), device)
    encoded = [Encoded(i, c) for i, c in rows(shape, n_rows)]
    prompt = torch.randn(20, 512, device=device) * 0.02
    kept = PrefixCache(1 << 30)
    validation_loss(loaded, prompt, encoded, 8, kept)  # the first evaluation fills the cache
    variants = {"full": lambda: validation_loss(loaded, prompt, encoded, 8),
                "split": lambda: validation_loss(loaded, prompt, encoded, 8, PrefixCache(0)),
                "kept": lambda: validation_loss(loaded, prompt, encoded, 8, kept)}
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    med = {name: statistics.median(v) for name, v in times.items()}
    print(f"eval shape={shape} device={device.type} rows={n_rows} batch=8 P=20 rounds={rounds} kept={kept.bytes / 2**20:.1f} MiB")
    for name in variants:
        print(f"  {name:6s} {med[name] * 1e3:8.1f} ms/evaluation  {med[name] / med['full']:5.2f}x full")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", choices=["bench", "hans", "both"], default="both")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--eval", action="store_true", help="time a validation evaluation instead of a step")
    parser.add_argument("--model", default="", help="a real model instead (folder or GGUF file): cached, split and full steps")
    args = parser.parse_args()
    if args.model:
        run_model(args.model, args.rounds, args.steps, torch.device(args.device))
        return
    for shape in (["bench", "hans"] if args.shape == "both" else [args.shape]):
        if args.eval:
            run_eval(shape, args.rounds, torch.device(args.device))
        else:
            run(shape, args.rounds, args.steps, torch.device(args.device))


if __name__ == "__main__":
    main()
