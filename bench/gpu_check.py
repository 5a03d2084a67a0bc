"""Everything that needs a GPU, in one prepared run: one JSON file and one markdown table.

    python bench/gpu_check.py --out DIR                # CUDA: under 5 minutes on one GPU
    python bench/gpu_check.py --out DIR --dry-run      # CPU, tiny shapes, kernels in Triton's interpreter (CI)

It writes DIR/gpu_check.json (every record) and DIR/gpu_check.md (the same as a table). It covers:

1. kernels: the three statistics updates (post-pass, in-pass gathered, in-pass gated) against the torch
   path, fp32/bf16/fp16 activations, ragged batches (B and m off the tile sizes, per-row prompt offsets);
   the largest relative difference of the float64 moments (bound 1e-6);
2. bandwidth: each kernel's bytes floor (activations read once, moments read and written once) over its
   time, against a device-to-device copy of the same bytes;
3. a model of SmolLM2-135M-Instruct's shape (random weights; bf16 on CUDA; a tiny Llama with --dry-run):
   skn's statistics pass against a bare forward over the same batches, one prompt-training step (and
   PEFT's prompt-tuning step where peft imports), and the peak `torch.cuda.max_memory_allocated` of a probe
   and a training step against skn's memory plan;
4. 4-bit loading through bitsandbytes where it imports (otherwise the record says what is missing).

   It also runs `--fused-mlp` (skn.engine.fused_mlp) against the plain path, with a metric known after the pass
   (loss) and before it (a label: the in-pass gated kernel): time and the largest corr difference (1e-6).

Timings with --dry-run are CPU and interpreter times: they test the code paths, not the speed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import Tensor

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
Record = dict[str, object]


@dataclass(frozen=True)
class Sizes:
    layers: int
    width: int
    positions: int
    batch: int
    length: int
    iters: int


FULL = Sizes(layers=30, width=1536, positions=20, batch=29, length=160, iters=20)  # SmolLM2-135M; B off the tiles
TINY = Sizes(layers=2, width=37, positions=3, batch=5, length=11, iters=1)


def seconds(fn: Callable[[], object], device: torch.device, iters: int) -> float:
    """Mean seconds per call: CUDA events on a GPU, the wall clock elsewhere (after one warm-up call)."""
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
        start = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        end = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        start.record()  # type: ignore[no-untyped-call]
        for _ in range(iters):
            fn()
        end.record()  # type: ignore[no-untyped-call]
        torch.cuda.synchronize()
        return float(start.elapsed_time(end)) / 1e3 / iters  # type: ignore[no-untyped-call]
    begin = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - begin) / iters


def max_rel(got: list[Tensor], want: list[Tensor]) -> float:
    return max(float(((g - w).abs() / w.abs().clamp_min(1e-300)).max()) for g, w in zip(got, want))


def copy_rate(nbytes: int, device: torch.device, iters: int) -> float:
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    return 2 * nbytes / seconds(lambda: dst.copy_(src), device, iters)


def check_kernels(device: torch.device, sizes: Sizes) -> list[Record]:
    """Each Triton update against its torch path, per dtype, and its rate against a device copy."""
    from skn.kernels.launch import LaunchConfig
    from skn.kernels.pearson_gated import update_layer_gated_triton_
    from skn.kernels.pearson_gather import update_layer_gathered_triton_
    from skn.kernels.pearson_update import update_layer_triton_
    from skn.kernels.reference import update_layer_gated_torch_, update_layer_gathered_torch_
    from skn.statistics.stats import LayerMoments, update_layer_torch_

    s = sizes
    config = LaunchConfig(block_m=16, block_b=4) if device.type == "cpu" else LaunchConfig()
    gen = torch.Generator(device=device).manual_seed(0)
    records: list[Record] = []
    for dtype_name, dtype in DTYPES.items():
        start = [torch.randn(s.positions, s.width, dtype=torch.float64, generator=gen, device=device) for _ in range(3)]
        start[1] = start[1].abs()
        acts = (torch.randn(s.batch, s.positions, s.width, generator=gen, device=device) + 3.0).to(dtype)
        x = torch.randn(s.batch, s.length, s.width, generator=gen, device=device).to(dtype)
        up = torch.randn(s.batch, s.length, s.width, generator=gen, device=device).to(dtype)
        offsets = torch.randint(0, s.length - s.positions + 1, (s.batch,), generator=gen, device=device)
        y = torch.randn(s.batch, dtype=torch.float64, generator=gen, device=device)
        element = torch.finfo(dtype).bits // 8
        acts_bytes = s.batch * s.positions * s.width * element
        state_bytes = 3 * s.positions * s.width * 8 * 2
        modes: list[tuple[str, Callable[[list[Tensor]], None], Callable[[list[Tensor]], None], int]] = [
            ("post-pass", lambda v: update_layer_triton_(LayerMoments(*v, 4, 0.3), acts, y, config=config),
             lambda v: update_layer_torch_(LayerMoments(*v, 4, 0.3), acts, y), acts_bytes + state_bytes),
            ("gathered", lambda v: update_layer_gathered_triton_(LayerMoments(*v, 4, 0.3), x, offsets, y, config=config),
             lambda v: update_layer_gathered_torch_(LayerMoments(*v, 4, 0.3), x, offsets, y), acts_bytes + state_bytes),
            ("gated", lambda v: update_layer_gated_triton_(LayerMoments(*v, 4, 0.3), x, up, offsets, y, config=config),
             lambda v: update_layer_gated_torch_(LayerMoments(*v, 4, 0.3), x, up, offsets, y), 2 * acts_bytes + state_bytes),
        ]
        for mode, kernel, reference, floor in modes:
            got, want = [u.clone() for u in start], [u.clone() for u in start]
            kernel(got)
            reference(want)
            err = max_rel(got, want)
            # on a CPU the gated fp16/fp32 SiLU may differ from torch's in the last bit (numpy's exp)
            bound = 1e-6 if device.type == "cuda" or mode != "gated" or dtype == torch.bfloat16 else 1e-3
            work = [u.clone() for u in start]
            kernel_s = seconds(lambda: kernel(work), device, s.iters)
            torch_s = seconds(lambda: reference(work), device, s.iters)
            copy = copy_rate(floor, device, s.iters)
            records.append({
                "section": "kernel", "name": mode, "dtype": dtype_name, "max_rel_diff": err, "bound": bound,
                "ok": err <= bound, "kernel_s": kernel_s, "torch_s": torch_s, "floor_bytes": floor,
                "kernel_GBps": floor / kernel_s / 1e9, "copy_GBps": copy / 1e9, "of_copy": floor / kernel_s / copy,
            })
    return records


def smol_config(tiny: bool) -> object:
    from transformers import LlamaConfig

    if tiny:
        return LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                           tie_word_embeddings=True, pad_token_id=0)
    return LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                       num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
                       rope_theta=100000.0, tie_word_embeddings=True, pad_token_id=0)


def check_model(device: torch.device, sizes: Sizes, tiny: bool) -> list[Record]:
    """Probe pass vs bare forward, a training step (vs PEFT's), peak memory vs the plan."""
    from transformers import AutoModelForCausalLM

    from skn.inputs.data import Example
    from skn.inputs.layout import Encoded, make_batch
    from skn.engine.memory import Workload, model_shape, plan
    from skn.inputs.metrics import parse_metric
    from skn.models.model import wrap_loaded
    from skn.engine.probe import statistics_pass
    from skn.models.quantize import Quantize
    from skn.training.scoring import completion_scores
    from skn.statistics.stats import correlation

    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    config = smol_config(tiny)
    torch.manual_seed(0)
    with device:
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)  # type: ignore[no-untyped-call]
    loaded = wrap_loaded("smollm2-135m-shape (random)", model, SimpleNamespace(pad_token_id=0), device)
    vocab = int(getattr(config, "vocab_size"))
    gen = torch.Generator().manual_seed(1)
    n_rows, completion = 2 * sizes.batch, 4
    rows = [Encoded(tuple(int(t) for t in torch.randint(1, vocab, (int(torch.randint(sizes.length // 2, sizes.length, (1,), generator=gen)),), generator=gen)),
                    tuple(int(t) for t in torch.randint(1, vocab, (completion,), generator=gen)))
            for _ in range(n_rows)]
    examples = [Example("", "", {}, f"bench#{i}") for i in range(n_rows)]
    prompt = (torch.randn(sizes.positions, loaded.hidden_size, generator=gen) * 0.02).to(device)
    spec = parse_metric("loss")
    batches = [make_batch(rows[i:i + sizes.batch], sizes.positions, 0) for i in range(0, n_rows, sizes.batch)]

    def bare() -> None:
        with torch.no_grad():
            for batch in batches:
                completion_scores(loaded, batch, prompt)

    def probe() -> None:
        statistics_pass(loaded, prompt, rows, examples, spec, batch_size=sizes.batch)

    records: list[Record] = []
    bare_s = seconds(bare, device, max(1, sizes.iters // 4))
    probe_s = seconds(probe, device, max(1, sizes.iters // 4))
    records.append({"section": "model", "name": "probe pass / bare forward", "dtype": str(dtype)[6:],
                    "bare_s": bare_s, "probe_s": probe_s, "ratio": probe_s / bare_s, "ok": True})
    known = parse_metric("score")
    scored = [Example("", "", {"score": float(i % 7) + 0.5 * i}, f"bench#{i}") for i in range(n_rows)]
    for label, metric, data in (("loss (post-pass)", spec, examples), ("label (in-pass)", known, scored)):
        plain = statistics_pass(loaded, prompt, rows, data, metric, batch_size=sizes.batch)
        fused = statistics_pass(loaded, prompt, rows, data, metric, batch_size=sizes.batch, fused_mlp=True)
        diff = float((correlation(plain.stats) - correlation(fused.stats)).abs().nan_to_num(0.0).max())

        def timed(fused_mlp: bool, metric: object = metric, data: list[Example] = data) -> None:
            statistics_pass(loaded, prompt, rows, data, metric, batch_size=sizes.batch, fused_mlp=fused_mlp)  # type: ignore[arg-type]

        plain_s = seconds(lambda: timed(False), device, max(1, sizes.iters // 4))
        fused_s = seconds(lambda: timed(True), device, max(1, sizes.iters // 4))
        records.append({"section": "model", "name": f"--fused-mlp vs plain, {label}", "dtype": str(dtype)[6:],
                        "plain_s": plain_s, "fused_s": fused_s, "fused_over_plain": fused_s / plain_s,
                        "max_corr_diff": diff, "ok": diff <= 1e-6})

    trained = prompt.float().clone().requires_grad_(True)
    optimizer = torch.optim.AdamW([trained], lr=1e-3)

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward(completion_scores(loaded, batches[0], trained).mean_loss)
        optimizer.step()

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    step_s = seconds(train_step, device, max(1, sizes.iters // 4))
    probe()
    measured = int(torch.cuda.max_memory_allocated()) if device.type == "cuda" else None
    record: Record = {"section": "model", "name": "training step", "dtype": str(dtype)[6:], "skn_s": step_s, "ok": True}
    if importlib.util.find_spec("peft") is not None:
        try:
            peft_s = peft_step_seconds(model, batches[0], sizes, device)
            record["peft_s"] = peft_s
            record["skn_over_peft"] = step_s / peft_s
        except Exception as err:  # a PEFT version we have not seen: say so, keep the rest of the check
            record["peft_s"] = None
            record["note"] = f"peft failed: {type(err).__name__}: {err}"[:300]
    else:
        record["peft_s"] = None
        record["note"] = "peft is not installed"
    records.append(record)
    longest = max(len(r.instruction) + sizes.positions + len(r.completion) for r in rows)
    prefix = min(len(r.instruction) + sizes.positions for r in rows)
    work = Workload(sizes.batch, longest, longest - prefix + 1, sizes.positions, True, False, True)
    planned = plan(model_shape(config), work, dtype, Quantize.NONE, device, None)
    records.append({"section": "memory", "name": "peak allocated vs plan", "dtype": str(dtype)[6:],
                    "plan_peak_bytes": planned.peak_bytes, "measured_peak_bytes": measured,
                    "measured_over_plan": measured / planned.peak_bytes if measured is not None else None,
                    "ok": measured is None or abs(measured - planned.peak_bytes) <= 0.2 * planned.peak_bytes})
    return records


def peft_step_seconds(model: torch.nn.Module, batch: object, sizes: Sizes, device: torch.device) -> float:
    """One PEFT prompt-tuning step on the same batch: PEFT prepends its own P virtual tokens to skn's
    layout (which already holds P slots), so its sequence is P tokens longer; the labels are skn's
    already-shifted targets, which makes PEFT's loss value meaningless but its cost the same. Timing only."""
    from peft import PromptTuningConfig, TaskType, get_peft_model

    peft_model = get_peft_model(model, PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=sizes.positions))
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    ids = batch.input_ids.to(device)  # type: ignore[attr-defined]
    mask = batch.attention_mask.to(device)  # type: ignore[attr-defined]
    labels = batch.targets.to(device)  # type: ignore[attr-defined]

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        peft_model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        optimizer.step()

    return seconds(step, device, max(1, sizes.iters // 4))


def check_4bit(device: torch.device, tiny: bool) -> list[Record]:
    """Load a saved random model of the same shape in 4 bits and run one statistics pass on it."""
    from skn.models.quantize import Quantize, load_quantized, missing_for

    missing = missing_for(Quantize.BIT4, device)
    if missing:
        return [{"section": "quantize", "name": "4-bit load", "ok": True, "skipped": missing}]
    from transformers import AutoModelForCausalLM

    from skn.models.model import wrap_loaded

    with tempfile.TemporaryDirectory() as folder:
        AutoModelForCausalLM.from_config(smol_config(tiny)).save_pretrained(folder)  # type: ignore[no-untyped-call]
        torch.cuda.reset_peak_memory_stats()
        module, _ = load_quantized(folder, Quantize.BIT4, torch.bfloat16, device, False)
        loaded = wrap_loaded("4bit", module, SimpleNamespace(pad_token_id=0), device)
        ids = torch.randint(1, 90, (2, 16), device=device)
        with torch.no_grad():
            loaded.model(input_ids=ids, use_cache=False)
        return [{"section": "quantize", "name": "4-bit load", "ok": True,
                 "peak_bytes": int(torch.cuda.max_memory_allocated()), "neuron_layers": loaded.sites.num_layers}]


def markdown(records: list[Record]) -> str:
    lines = ["| section | check | dtype | figures | ok |", "|---|---|---|---|---|"]
    for r in records:
        figures = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()
                            if k not in ("section", "name", "dtype", "ok"))
        lines.append(f"| {r['section']} | {r['name']} | {r.get('dtype', '')} | {figures} | {'yes' if r['ok'] else 'NO'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path, help="folder for gpu_check.json and gpu_check.md")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes, Triton's interpreter")
    args = parser.parse_args(argv)
    if args.dry_run:
        os.environ["TRITON_INTERPRET"] = "1"  # before any kernel module is imported
        device = torch.device("cpu")
    elif torch.cuda.is_available():
        device = torch.device("cuda")
    else:
        print("no CUDA device here: run with --dry-run", file=sys.stderr)
        return 2
    sizes = TINY if args.dry_run else FULL
    begin = time.perf_counter()
    records = check_kernels(device, sizes) + check_model(device, sizes, args.dry_run) + check_4bit(device, args.dry_run)
    summary = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu (dry run)",
               "dry_run": bool(args.dry_run), "torch": torch.__version__, "seconds": time.perf_counter() - begin,
               "ok": all(bool(r["ok"]) for r in records), "records": records}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    (args.out / "gpu_check.md").write_text(
        f"# gpu_check on {summary['device']} ({summary['seconds']:.0f} s)\n\n" + markdown(records), encoding="utf-8")
    print(markdown(records))
    print("gpu_check:", "PASS" if summary["ok"] else "FAIL", f"-> {args.out}")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
