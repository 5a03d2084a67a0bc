"""Ablation sets sharing one forward (`skn ablate --share S`) against one set per forward, and sets at the
prompt sharing each batch's instruction (the split forward) against the full forward, side by side.

A stack of sets like a curve's (the unablated model, then per K in 1, 10, 100 the top K and C random
sets of K, mean at the prompt slots) is measured three times per round by `skn.ablation.ablate.measure_many`:
with the full forward at share 1 (one pass over the items per set) and at share S (S sets per forward, the
items repeated S times along the batch), and with the split forward at share S (each batch's instruction run
once for the S sets), in turn, best of --repeats rounds each, so machine noise hits all alike. Also printed:
the largest difference between each path's per-item losses and the first's (0.0: bitwise equal), and with
--choices how many items' correctness differs from the first's.

`--where all` edits every position instead of the prompt's slots: the split forward then runs the instructions
once per set, under the set's edits. `--choices C` gives every item C - 1 alternative answers (as an accuracy
with C choices does, BIG-bench arithmetic's 7), which share their item's instruction in the split forward.

Model: --model (a folder or GGUF file, as `skn probe --model` takes it, e.g.
../shared/models/smollm2-135m-instruct), else the stories model (../shared/models/stories260K-hf, a 5-layer
Llama, 172 neurons a layer) when it is there, else a random Qwen2 of the same size; random token rows
(instructions of 6-29 tokens, or --instruction LO,HI), P = 8.
Usage: python bench/ablate_share.py [--n 32] [--batch-size 8] [--controls 7] [--share 8] [--repeats 2] [--instruction 6,30]
                                    [--where prompt|all] [--choices 1] [--model PATH]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from types import SimpleNamespace

import torch

STORIES = Path(__file__).resolve().parents[2] / "shared" / "models" / "stories260K-hf"


def build(n: int, lengths: tuple[int, int], prompt_len: int = 8, folder: str = "") -> tuple[object, list[object], list[object], torch.Tensor, str]:
    from transformers import AutoModelForCausalLM, Qwen2Config

    from skn.models.model import load_model, wrap_loaded

    torch.manual_seed(0)
    if folder:  # loaded as `skn probe --model` loads it (a folder or a GGUF file)
        loaded = load_model(folder, device="cpu")
        return (loaded, *rows_and_prompt(n, lengths, prompt_len, int(loaded.model.config.vocab_size), loaded.hidden_size),
                Path(folder).name)
    if (STORIES / "config.json").is_file():
        model = AutoModelForCausalLM.from_pretrained(STORIES, dtype=torch.float32)
        name = "stories260K"
    else:
        config = Qwen2Config(vocab_size=512, hidden_size=64, intermediate_size=172, num_hidden_layers=5,
                             num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=256)
        model = AutoModelForCausalLM.from_config(config)
        name = "random-qwen2-5x172"
    model.eval()
    loaded = wrap_loaded(name, model, SimpleNamespace(pad_token_id=0, eos_token_id=1), torch.device("cpu"))
    return (loaded, *rows_and_prompt(n, lengths, prompt_len, int(model.config.vocab_size), int(model.config.hidden_size)), name)


def rows_and_prompt(n: int, lengths: tuple[int, int], prompt_len: int, vocab: int, hidden: int) -> tuple[list[object], list[object], torch.Tensor]:
    """N random-token items (instructions of LO..HI-1 tokens, 7-token answers) and a small random prompt."""
    from skn.inputs.data import Example
    from skn.inputs.layout import Encoded

    gen = torch.Generator().manual_seed(0)
    rows, examples = [], []
    for i in range(n):
        length = int(torch.randint(lengths[0], lengths[1], (1,), generator=gen))
        instruction = tuple(int(t) for t in torch.randint(2, vocab, (length,), generator=gen))
        rows.append(Encoded(instruction, answer(vocab, gen)))
        examples.append(Example("", "", {}, f"bench:{i}"))
    prompt = torch.randn(prompt_len, hidden, generator=gen) * 0.02
    return rows, examples, prompt


def answer(vocab: int, gen: torch.Generator) -> tuple[int, ...]:
    """A random 6-token answer and the end token (1)."""
    return tuple(int(t) for t in torch.randint(2, vocab, (6,), generator=gen)) + (1,)


def alternatives(rows: list[object], choices: int, vocab: int) -> tuple[list[object], list[int]]:
    """Every row's choices - 1 other answers (random tokens after its instruction) and the row each belongs to."""
    from skn.inputs.layout import Encoded

    gen = torch.Generator().manual_seed(3)
    alt_rows, owners = [], []
    for i, row in enumerate(rows):
        for _ in range(choices - 1):
            alt_rows.append(Encoded(row.instruction, answer(vocab, gen)))  # type: ignore[attr-defined]
            owners.append(i)
    return alt_rows, owners


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
    parser.add_argument("--instruction", default="6,30", help="instruction lengths in tokens: LO,HI (HI excluded)")
    parser.add_argument("--where", choices=("prompt", "all"), default="prompt", help="where the sets edit")
    parser.add_argument("--choices", type=int, default=1, help="answers per item (C - 1 alternatives each)")
    parser.add_argument("--model", default="", help="a model folder or GGUF file instead of the stories model")
    args = parser.parse_args()
    lo, hi = (int(x) for x in args.instruction.split(","))
    loaded, rows, examples, prompt, name = build(args.n, (lo, hi), folder=args.model)
    sites = loaded.sites  # type: ignore[attr-defined]
    P = int(prompt.shape[0])
    alt_rows, owners = alternatives(rows, args.choices, int(loaded.model.config.vocab_size))  # type: ignore[attr-defined]
    full, split = (prepare(loaded, prompt, rows, examples, parse_metric("loss"), alt_rows, owners, args.choices > 1,  # type: ignore[arg-type]
                           args.batch_size, split=way) for way in (False, True))
    if not split.split:
        raise SystemExit(f"{name} does not take the split forward")
    mean_x = torch.randn(sites.num_layers, P, sites.width, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    gen = torch.Generator().manual_seed(2)
    ranked = [Target(int(c) // sites.width, int(c) % sites.width, int(torch.randint(0, P, (1,), generator=gen)))
              for c in torch.randperm(sites.num_layers * sites.width, generator=gen)]
    stack: list[object] = [None]
    for k in (1, 10, 100):
        for targets in (tuple(ranked[:k]), *draw_controls(ranked[:k], sites.width, args.controls, 0, True)):
            stack.append(build_intervention(targets, Value(ValueKind.MEAN), Where(args.where), mean_x))
    sets = len(stack)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, model {name} ({sites.num_layers} x {sites.width} neurons), "
          f"N={args.n}, batch {args.batch_size}, instructions of {lo}-{hi - 1} tokens, {args.choices} answers an item, "
          f"--where {args.where}, {sets} sets, best of {args.repeats} rounds", flush=True)
    ways = {"full, share 1": (full, 1), f"full, share {args.share}": (full, args.share), f"split, share {args.share}": (split, args.share)}
    measure_many(full, stack[:2], 1)  # type: ignore[arg-type]  # warm-up
    best = {way: float("inf") for way in ways}
    results = {}
    with torch.no_grad():
        for _ in range(args.repeats):
            for way, (data, share) in ways.items():
                start = time.perf_counter()
                results[way] = measure_many(data, stack, share)  # type: ignore[arg-type]
                best[way] = min(best[way], time.perf_counter() - start)
    first = next(iter(ways))
    print(f"{'forward':>16} {'passes':>7} {'forwards':>9} {'rows/forward':>13} {'seconds':>9} {'largest loss diff':>18} {'answers flipped':>15}"
          + ("  (forwards and rows: the items'; the alternatives add their own)" if args.choices > 1 else ""))
    for way, (_, share) in ways.items():
        pairs = list(zip(results[first], results[way], strict=True))
        diff = max(float((a.loss - b.loss).abs().max()) for a, b in pairs)
        flips = sum(int((a.correct != b.correct).sum()) for a, b in pairs if a.correct is not None and b.correct is not None)
        print(f"{way:>16} {passes(sets, share):>7} {passes(sets, share) * -(-args.n // args.batch_size):>9} "
              f"{share * args.batch_size:>13} {best[way]:>9.2f} {diff:>18.3g} {flips:>15}")
    shared, splitted = f"full, share {args.share}", f"split, share {args.share}"
    print(f"share {args.share} / share 1 time: {best[shared] / best[first]:.3f}; split / full at share {args.share}: "
          f"{best[splitted] / best[shared]:.3f}")


if __name__ == "__main__":
    main()
