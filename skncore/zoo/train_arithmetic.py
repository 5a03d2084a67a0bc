"""Train the bundled model `arith_tiny` from scratch: a 4-layer Llama over characters that answers
skn's own generated BIG-bench-style multiple-choice multiplication items.

    python -m skn.zoo.train_arithmetic --out skncore/zoo/arith_tiny          # the shipped model
    python -m skn.zoo.train_arithmetic --out /tmp/smoke --steps 3 --pool 64  # a smoke run (seconds)
    python -m skn.zoo.train_arithmetic --out /tmp/shortcut --digits 1,2,3,4,5 --format-pool 2000 \
        --val-items 60 --distractor-prefix 2   # the second attempt of bench/README.md (not shipped)
    python -m skn.zoo.train_arithmetic --out /tmp/aux --init-from skncore/zoo/arith_tiny --auxiliary shortcut \
        --steps 1000 --lr 1e-3    # the shipped model taught to say at the slots whether the shortcut holds

Why it looks the way it does:
- Training text is only what `skn.tasks.arithmetic.generate_items` writes (BIG-bench's canary forbids its
  own examples as training text; they serve only to evaluate and probe).
- Each sequence is laid out exactly as skn's probe lays it out (see `skn.inputs.layout`): BOS + instruction,
  then P=20 copies of the placeholder token `<soft>` where the soft prompt will sit, then the completion
  and EOS. A prompt initialised from `<soft>`'s embedding therefore starts where pretraining left off,
  instead of in a gap the model never saw.
- The loss is on the completion and EOS only: the operands and distractors are random digits, and
  predicting them would only spend the model's small capacity.
- One thread, a fixed seed, deterministic algorithms, and batches that are a pure function of
  (seed, step): the run rebuilds bit for bit, and `--resume` continues it exactly.
- `--auxiliary shortcut` adds a second target at the prompt slots, weighted by `aux_weight` against the
  completion's loss: whether the item's last-digit shortcut holds (skn.zoo.shortcut_target).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from skn.errors import ModelError
from skn.inputs.data import Example
from skn.tasks.arithmetic import ArithmeticItem
from skn.models.tokenizer import Tokenizer
from skn.zoo import CHECKSUM_FILE, PLACEHOLDER, file_sha256
from skn.inputs.layout import make_batch
from skn.zoo.multiple_choice import encode_pretraining, evaluate, token_nll
from skn.zoo.pretrain_checkpoint import STATE_FILE, History, load_checkpoint, save_checkpoint
from skn.zoo.shortcut_target import Auxiliary, aux_accuracy, aux_targets, aux_token_ids, shortcut_labels

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>", PLACEHOLDER)
# Every printable ASCII character plus newline: one token each.
CHARACTERS = ("\n",) + tuple(chr(code) for code in range(32, 127))
# With 4- and 5-digit items in the mix (whose full product is far beyond the model, while the last digit,
# (a0 * b0) mod 10, and the length are easy), items below this many digits are there for the format and get
# `format_pool` items each. The shipped model has only 1-3 digits, with format_pool = pool.
FORMAT_BELOW = 4
MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


@dataclass(frozen=True)
class PretrainConfig:
    """Everything that determines the weights. The defaults build the shipped model."""

    seed: int = 20240607
    steps: int = 3000
    batch_size: int = 32
    lr: float = 3e-3
    min_lr: float = 3e-4
    warmup: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    operations: tuple[str, ...] = ("multiplication",)
    digits: tuple[int, ...] = (1, 2, 3)
    pool: int = 20000  # generated training items per (operation, digits) for digits >= FORMAT_BELOW
    format_pool: int = 20000  # ... and for the short ones (digits < FORMAT_BELOW), there for the format
    # Same-length distractors share the answer's first `distractor_prefix` digits (0: the generator's uniform
    # ones, as BIG-bench): the product's magnitude then cannot tell them apart, its last digit still can.
    distractor_prefix: int = 0
    val_items: int = 100  # generated held-out items per (operation, digits), for the log only
    prompt_len: int = 20
    hidden: int = 128
    layers: int = 4
    heads: int = 4
    intermediate: int = 512
    max_positions: int = 256
    eval_every: int = 250
    checkpoint_every: int = 250
    auxiliary: Auxiliary = Auxiliary.NONE
    aux_weight: float = 1.0  # the auxiliary loss's weight against the completion's (both per-token means)
    init_from: str = ""  # a model folder to start from (fine-tuning) instead of the seeded initialisation


# ----------------------------------------------------------------------------------------------
# tokenizer and model


def build_tokenizer() -> Tokenizer:
    """A character-level tokenizer (tokenizers' BPE with no merges), BOS added on encode."""
    from tokenizers import Tokenizer as CoreTokenizer, decoders, models, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS + CHARACTERS)}
    core = CoreTokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    core.add_special_tokens(list(SPECIAL_TOKENS))
    core.decoder = decoders.Fuse()
    bos = vocab["<s>"]
    core.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=core,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        additional_special_tokens=[PLACEHOLDER],
    )


def save_tokenizer(tokenizer: object, out: Path) -> None:
    """tokenizer.json plus a tokenizer_config.json that transformers 4.x and 5.x both read."""
    tokenizer.backend_tokenizer.save(str(out / "tokenizer.json"))  # type: ignore[attr-defined]
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "pad_token": "<pad>",
        "unk_token": "<unk>",
        "additional_special_tokens": [PLACEHOLDER],
        "model_max_length": 256,
        "clean_up_tokenization_spaces": False,
    }
    special = {k: config[k] for k in ("bos_token", "eos_token", "pad_token", "unk_token", "additional_special_tokens")}
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n", encoding="utf-8")


def build_model(cfg: PretrainConfig, vocab_size: int) -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    settings: dict[str, Any] = dict(
        vocab_size=vocab_size,
        hidden_size=cfg.hidden,
        intermediate_size=cfg.intermediate,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        num_key_value_heads=cfg.heads,
        max_position_embeddings=cfg.max_positions,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        pad_token_id=SPECIAL_TOKENS.index("<pad>"),
        bos_token_id=SPECIAL_TOKENS.index("<s>"),
        eos_token_id=SPECIAL_TOKENS.index("</s>"),
        attn_implementation="sdpa",
    )
    torch.manual_seed(cfg.seed)
    model: nn.Module = LlamaForCausalLM(LlamaConfig(**settings))
    return model


# ----------------------------------------------------------------------------------------------
# data


def training_counts(cfg: PretrainConfig) -> dict[int, int]:
    """Generated training items per digits: `pool` for 4 and 5 digits, `format_pool` for the short ones."""
    return {d: cfg.pool if d >= FORMAT_BELOW else min(cfg.pool, cfg.format_pool) for d in cfg.digits}


def same_magnitude(item: ArithmeticItem, prefix: int, rng: random.Random) -> ArithmeticItem:
    """The item with every same-length numeric distractor redrawn to share the answer's first `prefix`
    digits, the rest uniform (the last digit too): only the full product, or its last digit, tells them from
    the answer. Answers shorter than prefix + 2 digits (and prefix 0) are left as generated."""
    answer = item.answer
    if prefix < 1 or len(answer) < prefix + 2 or not answer.isdigit():
        return item
    choices = list(item.choices)
    for i, choice in enumerate(choices):
        if choice == answer or len(choice) != len(answer) or not choice.isdigit():
            continue
        while True:
            value = answer[:prefix] + "".join(rng.choice("0123456789") for _ in range(len(answer) - prefix))
            if value != answer and value not in choices:
                choices[i] = value
                break
    return dataclasses.replace(item, choices=tuple(choices))


def generated_examples(cfg: PretrainConfig, counts: Mapping[int, int], salt: int) -> tuple[Example, ...]:
    """counts[digits] generated items per (operation, digits), each with its own seeded choice order."""
    from skn.tasks.arithmetic import generate_items, to_example

    out: list[Example] = []
    for o, operation in enumerate(cfg.operations):
        for digits in cfg.digits:
            seed = cfg.seed + salt * 1_000_003 + o * 10_007 + digits * 101
            want = counts[digits]
            items: list[ArithmeticItem] = []
            # Drawn in chunks of distinct questions (there are only 100 distinct 1-digit and 8,100 2-digit
            # ones); a question may come back in a later chunk, with new distractors and a new order.
            chunk = 100 if digits == 1 else 2000
            while len(items) < want:
                items.extend(generate_items(operation, digits, min(want - len(items), chunk), seed))
                seed += 1
            rng = random.Random(f"same-magnitude|{seed}")
            items = [same_magnitude(item, cfg.distractor_prefix, rng) for item in items]
            out.extend(to_example(item, seed + 7 * i) for i, item in enumerate(items))
    return tuple(out)


# ----------------------------------------------------------------------------------------------
# training


def learning_rate(cfg: PretrainConfig, step: int) -> float:
    """Linear warmup, then cosine decay to min_lr at the last step."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1.0 + math.cos(math.pi * min(1.0, progress)))


def write_checksums(folder: Path) -> None:
    lines = [f"{file_sha256(folder / name)}  {name}" for name in MODEL_FILES if (folder / name).exists()]
    (folder / CHECKSUM_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")


def save_model(folder: Path, model: nn.Module, tokenizer: Tokenizer, cfg: PretrainConfig, history: History, seconds: float) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder), safe_serialization=True)  # type: ignore[operator]
    # Drop what save_pretrained adds that is not part of the contract (generation defaults).
    for extra in ("generation_config.json",):
        if (folder / extra).exists():
            (folder / extra).unlink()
    save_tokenizer(tokenizer, folder)
    settings = {k: (v.value if isinstance(v, Enum) else v) for k, v in asdict(cfg).items()}  # enums as their text
    record = {"train_config": settings, "train_seconds": round(seconds, 1), "history": history.rows,
              "torch": torch.__version__, "placeholder_token": PLACEHOLDER}
    (folder / "training.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    write_checksums(folder)


def pretrain(cfg: PretrainConfig, out: Path, checkpoint: Path | None, resume: bool, log: bool = True) -> History:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    tokenizer = build_tokenizer()
    vocab = len(SPECIAL_TOKENS) + len(CHARACTERS)
    model = build_model(cfg, vocab)
    placeholder = SPECIAL_TOKENS.index(PLACEHOLDER)
    pad = SPECIAL_TOKENS.index("<pad>")

    if cfg.init_from:
        weights = load_file(str(Path(cfg.init_from) / "model.safetensors"))
        try:
            missing, unexpected = model.load_state_dict(weights, strict=False)
        except RuntimeError as err:  # a tensor of another shape
            raise ModelError(f"--init-from {cfg.init_from}: not this architecture ({str(err).splitlines()[-1].strip()})") from None
        if unexpected or any(not name.endswith("lm_head.weight") for name in missing):  # tied to the embedding
            raise ModelError(f"--init-from {cfg.init_from}: not this architecture (missing {missing}, unexpected {unexpected})")

    started = time.perf_counter()
    train_examples = generated_examples(cfg, training_counts(cfg), salt=1)
    train_rows = [encode_pretraining(tokenizer, e) for e in train_examples]
    val_examples = generated_examples(cfg, {d: cfg.val_items for d in cfg.digits}, salt=2)
    aux = cfg.auxiliary is Auxiliary.SHORTCUT
    aux_ids = aux_token_ids(tokenizer)
    train_labels = shortcut_labels(train_examples) if aux else ()
    val_rows = [encode_pretraining(tokenizer, e) for e in val_examples] if aux else []
    val_labels = shortcut_labels(val_examples) if aux else ()
    if log:
        print(f"{sum(p.numel() for p in model.parameters())} parameters; {len(train_rows)} training items "
              f"built in {time.perf_counter() - started:.1f}s", flush=True)

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr, betas=(0.9, 0.98), eps=1e-8,
    )
    step, history = 0, History()
    if resume and checkpoint is not None and (checkpoint / STATE_FILE).exists():
        step, history = load_checkpoint(checkpoint, model, optimizer)
        if log:
            print(f"resumed at step {step}", flush=True)

    running, seen = 0.0, 0
    while step < cfg.steps:
        model.train()
        generator = torch.Generator().manual_seed(cfg.seed * 7919 + step)
        picks = torch.randint(len(train_rows), (cfg.batch_size,), generator=generator).tolist()
        batch = make_batch([train_rows[i] for i in picks], cfg.prompt_len, pad, slot_token=placeholder)
        ids, mask, targets = batch.input_ids, batch.attention_mask, batch.targets
        if aux:
            extra = aux_targets(batch.prompt_start, ids.shape[1], [train_labels[i] for i in picks], cfg.prompt_len, aux_ids)
            nll = token_nll(model, ids, mask, torch.where(extra != -100, extra, targets))
            loss = nll[targets != -100].mean() + cfg.aux_weight * nll[extra != -100].mean()
        else:
            nll = token_nll(model, ids, mask, targets)
            loss = nll.sum() / (targets != -100).sum()
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(cfg, step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        step += 1
        running += float(loss.detach())
        seen += 1
        if step % cfg.eval_every == 0 or step == cfg.steps:
            report = evaluate(model, tokenizer, val_examples, cfg.prompt_len)
            row = {"step": step, "train_loss": round(running / seen, 4), **asdict(report),
                   "elapsed_s": round(time.perf_counter() - started, 1)}
            if aux:
                row["aux_accuracy"] = round(aux_accuracy(model, val_rows, val_labels, cfg.prompt_len, placeholder, pad, aux_ids), 4)
            history.rows.append(row)
            running, seen = 0.0, 0
            if log:
                said = f" | shortcut said right {row['aux_accuracy']:.3f}" if aux else ""
                print(f"step {step} train {row['train_loss']:.3f} | val {report.line()}{said} | "
                      f"{row['elapsed_s']}s", flush=True)
        if checkpoint is not None and (step % cfg.checkpoint_every == 0 or step == cfg.steps):
            save_checkpoint(checkpoint, model, optimizer, step, history)
    save_model(out, model, tokenizer, cfg, history, time.perf_counter() - started)
    return history


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = PretrainConfig()
    parser.add_argument("--out", type=Path, required=True, help="model folder to write")
    parser.add_argument("--checkpoint", type=Path, default=None, help="checkpoint folder (saved regularly)")
    parser.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--pool", type=int, default=defaults.pool, help="items per 4- and 5-digit subtask")
    parser.add_argument("--format-pool", type=int, default=defaults.format_pool, help="items per 1- to 3-digit subtask")
    parser.add_argument("--digits", default=",".join(map(str, defaults.digits)), help="operand digits, e.g. 1,2,3,4,5")
    parser.add_argument("--distractor-prefix", type=int, default=defaults.distractor_prefix,
                        help="same-length distractors share the answer's first N digits (0: uniform, as BIG-bench)")
    parser.add_argument("--val-items", type=int, default=defaults.val_items)
    parser.add_argument("--eval-every", type=int, default=defaults.eval_every)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--auxiliary", choices=[a.value for a in Auxiliary], default=defaults.auxiliary.value,
                        help="a second target at the prompt slots (shortcut: whether the last-digit shortcut holds)")
    parser.add_argument("--aux-weight", type=float, default=defaults.aux_weight)
    parser.add_argument("--init-from", default="", help="start from this model folder's weights (fine-tune)")
    args = parser.parse_args(argv)
    cfg = PretrainConfig(
        seed=args.seed, steps=args.steps, pool=args.pool, format_pool=args.format_pool, val_items=args.val_items,
        digits=tuple(int(d) for d in args.digits.split(",")), distractor_prefix=args.distractor_prefix,
        eval_every=min(args.eval_every, args.steps), batch_size=args.batch_size,
        checkpoint_every=min(defaults.checkpoint_every, args.steps),
        warmup=min(defaults.warmup, max(1, args.steps // 10)),
        lr=args.lr, min_lr=min(defaults.min_lr, args.lr), auxiliary=Auxiliary(args.auxiliary), aux_weight=args.aux_weight,
        init_from=args.init_from,
    )
    pretrain(cfg, args.out, args.checkpoint, args.resume)


if __name__ == "__main__":
    main()
