"""Ablation sets sharing one forward (`skn ablate --share S`) against one set per forward, side by side.

A stack of sets like a curve's (the unablated model, then per K in 1, 10, 100 the top K and C random
sets of K, mean at the prompt slots) is measured twice per round by `skn.ablation.ablate.measure_many`: with
share 1 (one pass over the items per set) and with share S (S sets per forward, the items repeated S
times along the batch), in turn, best of --repeats rounds each, so machine noise hits both alike. Also
printed: the largest difference between the two paths' per-item losses (0.0: bitwise equal).

Model: the stories model (../shared/models/stories260K-hf, a 5-layer Llama, 172 neurons a layer) when it is
there, else a random Qwen2 of the same size; random token rows, P = 8.
Usage: python bench/ablate_share.py [--n 32] [--batch-size 8] [--controls 7] [--share 8] [--repeats 2]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from types import SimpleNamespace

import torch

STORIES = Path(__file__).resolve().parents[2] / "shared" / "models" / "stories260K-hf"


def build(n: int, prompt_len: int = 8) -> tuple[object, list[object], list[object], torch.Tensor, str]:
    from transformers import AutoModelForCausalLM, Qwen2Config

    from skn.inputs.data import Example
    from skn.inputs.layout import Encoded
    from skn.models.model import wrap_loaded

    torch.manual_seed(0)
    if (STORIES / "config.json").is_file():
        model = AutoModelForCausalLM.from_pretrained(STORIES, dtype=torch.float32)
        name = "stories260K"
    else:
        config = Qwen2Config(vocab_size=512, hidden_size=64, intermediate_size=172, num_hidden_layers=5,
                             num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=256)
        model = AutoModelForCausalLM.from_config(config)
        name = "random-qwen2-5x172"
    model.eval()
    vocab = int(model.config.vocab_size)
    loaded = wrap_loaded(name, model, SimpleNamespace(pad_token_id=0, eos_token_id=1), torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    rows, examples = [], []
    for i in range(n):
        length = int(torch.randint(6, 30, (1,), generator=gen))
        instruction = tuple(int(t) for t in torch.randint(2, vocab, (length,), generator=gen))
        completion = tuple(int(t) for t in torch.randint(2, vocab, (6,), generator=gen)) + (1,)
        rows.append(Encoded(instruction, completion))
        examples.append(Example("", "", {}, f"bench:{i}"))
    prompt = torch.randn(prompt_len, int(model.config.hidden_size), generator=gen) * 0.02
    return loaded, rows, examples, prompt, name


def main() -> None:
    from skn.ablation.ablate import draw_controls, measure_many, passes, prepare
    from skn.ablation.intervention import Target, Value, ValueKind, Where, build_intervention
    from skn.inputs.metrics import parse_metric

    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--controls", type=int, default=7)
    parser.add_argument("--share", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    loaded, rows, examples, prompt, name = build(args.n)
    sites = loaded.sites  # type: ignore[attr-defined]
    P = int(prompt.shape[0])
    data = prepare(loaded, prompt, rows, examples, parse_metric("loss"), (), (), False, args.batch_size)  # type: ignore[arg-type]
    mean_x = torch.randn(sites.num_layers, P, sites.width, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    gen = torch.Generator().manual_seed(2)
    ranked = [Target(int(c) // sites.width, int(c) % sites.width, int(torch.randint(0, P, (1,), generator=gen)))
              for c in torch.randperm(sites.num_layers * sites.width, generator=gen)]
    stack: list[object] = [None]
    for k in (1, 10, 100):
        for targets in (tuple(ranked[:k]), *draw_controls(ranked[:k], sites.width, args.controls, 0, True)):
            stack.append(build_intervention(targets, Value(ValueKind.MEAN), Where.PROMPT, mean_x))
    sets = len(stack)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, model {name} ({sites.num_layers} x {sites.width} neurons), "
          f"N={args.n}, batch {args.batch_size}, {sets} sets, best of {args.repeats} rounds", flush=True)
    measure_many(data, stack[:2], 1)  # type: ignore[arg-type]  # warm-up
    best = {1: float("inf"), args.share: float("inf")}
    results = {}
    with torch.no_grad():
        for _ in range(args.repeats):
            for share in best:
                start = time.perf_counter()
                results[share] = measure_many(data, stack, share)  # type: ignore[arg-type]
                best[share] = min(best[share], time.perf_counter() - start)
    diff = max(float((a.loss - b.loss).abs().max()) for a, b in zip(results[1], results[args.share], strict=True))
    forwards = {s: passes(sets, s) * -(-args.n // args.batch_size) for s in best}
    print(f"{'share':>6} {'passes':>7} {'forwards':>9} {'rows/forward':>13} {'seconds':>9}")
    for s in best:
        print(f"{s:>6} {passes(sets, s):>7} {forwards[s]:>9} {s * args.batch_size:>13} {best[s]:>9.2f}")
    print(f"share {args.share} / share 1 time: {best[args.share] / best[1]:.3f}; largest per-item loss difference: {diff:.3g}")


if __name__ == "__main__":
    main()
