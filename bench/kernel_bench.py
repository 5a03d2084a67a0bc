"""Bench of the fused statistics kernels (skn.kernels) at Qwen1.5-1.8B's shape.

    python bench/kernel_bench.py                 # defaults: 24 layers, 5504 neurons, P=20, B=32, bf16

On CUDA it prints, per batch of B examples over all layers:
  1. the statistics update of each mode (post-pass, in-pass gathered, in-pass gated) and of the torch path:
     time, the bytes floor (each activation read once, the float64 moments read and written once), the
     achieved bytes/s, and that rate against a measured device-to-device copy;
  2. exactness: each kernel against the torch path (1e-6 relative), the gated activation bit for bit
     against torch's CUDA SiLU * up, and a gathered read past 2^31 elements (int64 addressing);
  3. a real-shaped random Qwen2 model (2048 hidden, 5504 neurons, 24 layers, bf16): forward with the
     statistics hooks of each mode / bare forward (per-example loss only) over the same batch.
Without CUDA it says so and runs the interpreter-mode equality check (TRITON_INTERPRET=1) instead.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclass(frozen=True)
class Shape:
    layers: int
    width: int
    positions: int
    batch: int
    length: int  # tokens per row in the in-pass modes
    dtype: torch.dtype

    @property
    def element_bytes(self) -> int:
        return torch.finfo(self.dtype).bits // 8

    def floor_bytes(self, reads_per_activation: int) -> int:
        """Activations read once (twice for gate and up), three float64 moments read and written once."""
        acts = self.layers * self.batch * self.positions * self.width * self.element_bytes * reads_per_activation
        state = self.layers * self.positions * self.width * 8 * 3 * 2
        return acts + state

    def flops(self) -> int:
        """float64 operations: per activation ~6 (mean sum, centre, square-add, co-moment multiply-add),
        per (layer, position, neuron) ~15 for the merge."""
        return 6 * self.layers * self.batch * self.positions * self.width + 15 * self.layers * self.positions * self.width


def cuda_seconds(fn: Callable[[], object], iters: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
    end = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return float(start.elapsed_time(end)) / 1e3 / iters


def max_rel(got: list[Tensor], want: list[Tensor]) -> float:
    return max(float(((g - w).abs() / w.abs().clamp_min(1e-300)).max()) for g, w in zip(got, want))


def copy_bandwidth(nbytes: int, iters: int) -> float:
    src = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    return 2 * nbytes / cuda_seconds(lambda: dst.copy_(src), iters)  # read + write


def bench_updates(shape: Shape, iters: int) -> None:
    from skn.kernels.pearson_gated import update_layer_gated_triton_
    from skn.kernels.pearson_gather import update_layer_gathered_triton_
    from skn.kernels.pearson_update import update_layer_triton_
    from skn.kernels.reference import update_layer_gated_torch_, update_layer_gathered_torch_
    from skn.statistics.stats import LayerMoments, update_layer_torch_

    s, dev = shape, torch.device("cuda")
    gen = torch.Generator(device=dev).manual_seed(0)
    state = [torch.zeros(s.layers, s.positions, s.width, dtype=torch.float64, device=dev) for _ in range(3)]
    acts = torch.randn(s.layers, s.batch, s.positions, s.width, generator=gen, device=dev).to(s.dtype)
    x = [torch.randn(s.batch, s.length, s.width, generator=gen, device=dev).to(s.dtype) for _ in range(s.layers)]
    up = [torch.randn(s.batch, s.length, s.width, generator=gen, device=dev).to(s.dtype) for _ in range(s.layers)]
    offsets = torch.randint(0, s.length - s.positions + 1, (s.batch,), generator=gen, device=dev)
    y = torch.randn(s.batch, generator=gen, device=dev, dtype=torch.float64)

    def run(mode: str, kernel: bool) -> Callable[[], None]:
        def step() -> None:
            for layer in range(s.layers):
                view = [t[layer] for t in state]
                if mode == "post-pass":
                    (update_layer_triton_ if kernel else update_layer_torch_)(*view, 5, 0.1, acts[layer], y)
                elif mode == "gathered":
                    fn = update_layer_gathered_triton_ if kernel else update_layer_gathered_torch_
                    fn(*view, 5, 0.1, x[layer], offsets, y)
                else:
                    gated = update_layer_gated_triton_ if kernel else update_layer_gated_torch_
                    gated(*view, 5, 0.1, x[layer], up[layer], offsets, y)

        return step

    floor = {"post-pass": s.floor_bytes(1), "gathered": s.floor_bytes(1), "gated": s.floor_bytes(2)}
    copy = copy_bandwidth(floor["post-pass"], iters)
    print(f"device-to-device copy: {copy / 1e9:.0f} GB/s (read + write of {floor['post-pass'] / 1e6:.0f} MB)")
    print(f"{'mode':<10} {'path':<7} {'ms/batch':>9} {'floor MB':>9} {'GB/s':>7} {'of copy':>8}")
    for mode in ("post-pass", "gathered", "gated"):
        for kernel in (True, False):
            seconds = cuda_seconds(run(mode, kernel), iters)
            rate = floor[mode] / seconds
            path = "triton" if kernel else "torch"
            print(f"{mode:<10} {path:<7} {seconds * 1e3:>9.3f} {floor[mode] / 1e6:>9.1f} {rate / 1e9:>7.0f} {rate / copy:>8.2f}")
    from skn.kernels.launch import LaunchConfig

    print("tile sweep, in-pass gathered (block_m, block_b, num_warps): GB/s")
    for tiles in ((128, 16, 4), (64, 16, 2), (256, 16, 4), (128, 8, 4), (64, 8, 2)):
        config = LaunchConfig(*tiles)

        def swept(config: LaunchConfig = config) -> None:
            for layer in range(s.layers):
                update_layer_gathered_triton_(LayerMoments(*(t[layer] for t in state), 5, 0.1), x[layer], offsets, y, config=config)

        print(f"  {tiles}: {floor['gathered'] / cuda_seconds(swept, iters) / 1e9:.0f}")


def check_exactness(shape: Shape) -> bool:
    from skn.kernels.pearson_gated import update_layer_gated_triton_
    from skn.kernels.pearson_gather import update_layer_gathered_triton_
    from skn.kernels.pearson_update import update_layer_triton_
    from skn.kernels.reference import gated_activation, update_layer_gated_torch_, update_layer_gathered_torch_
    from skn.statistics.stats import LayerMoments, update_layer_torch_

    dev = torch.device("cuda")
    gen = torch.Generator(device=dev).manual_seed(1)
    ok = True
    for dtype in DTYPES.values():
        p, m, b, t = shape.positions, shape.width, shape.batch, shape.length
        start = [torch.randn(p, m, dtype=torch.float64, device=dev, generator=gen) for _ in range(3)]
        start[1] = start[1].abs()
        acts = torch.randn(b, p, m, device=dev, generator=gen).to(dtype)
        x = (torch.randn(b, t, m, device=dev, generator=gen) * 3).to(dtype)
        up = torch.randn(b, t, m, device=dev, generator=gen).to(dtype)
        offsets = torch.randint(0, t - p + 1, (b,), device=dev, generator=gen)
        y = torch.randn(b, device=dev, dtype=torch.float64, generator=gen)
        cases: list[tuple[str, Callable[[list[Tensor]], None], Callable[[list[Tensor]], None]]] = [
            ("post-pass", lambda s: update_layer_triton_(LayerMoments(*s, 9, 0.2), acts, y), lambda s: update_layer_torch_(LayerMoments(*s, 9, 0.2), acts, y)),
            ("gathered", lambda s: update_layer_gathered_triton_(LayerMoments(*s, 9, 0.2), x, offsets, y),
             lambda s: update_layer_gathered_torch_(LayerMoments(*s, 9, 0.2), x, offsets, y)),
            ("gated", lambda s: update_layer_gated_triton_(LayerMoments(*s, 9, 0.2), x, up, offsets, y),
             lambda s: update_layer_gated_torch_(LayerMoments(*s, 9, 0.2), x, up, offsets, y)),
        ]
        for name, kernel, reference in cases:
            got, want = [u.clone() for u in start], [u.clone() for u in start]
            kernel(got)
            reference(want)
            err = max_rel(got, want)
            ok &= err <= 1e-6
            print(f"{str(dtype):<15} {name:<10} max relative difference to torch: {err:.2e}")
        # the activation itself, bit for bit: one row into an empty state leaves mean_x = act
        one = [torch.zeros(t, m, dtype=torch.float64, device=dev) for _ in range(3)]
        zero = torch.zeros(1, dtype=torch.int64, device=dev)
        update_layer_gated_triton_(LayerMoments(*one, 0, 0.0), x[:1], up[:1], zero, torch.zeros(1, dtype=torch.float64, device=dev))
        same = torch.equal(one[0], gated_activation(x[0], up[0]).double())
        ok &= same
        print(f"{str(dtype):<15} gated activation bit-identical to torch's SiLU(gate) * up: {same}")
    # int64 addressing: a [2, T, m] bf16 input of more than 2^31 elements, the last row's prompt at its very end
    m = shape.width
    length = (1 << 31) // (2 * m) + 64
    big = torch.empty(2, length, m, dtype=torch.bfloat16, device=dev)
    big[:, :64].normal_(generator=gen)
    big[:, -64:].normal_(generator=gen)
    offsets = torch.tensor([3, length - shape.positions], device=dev)
    y = torch.tensor([0.5, -1.0], dtype=torch.float64, device=dev)
    got = [torch.zeros(shape.positions, m, dtype=torch.float64, device=dev) for _ in range(3)]
    want = [u.clone() for u in got]
    update_layer_gathered_triton_(LayerMoments(*got, 0, 0.0), big, offsets, y)
    update_layer_gathered_torch_(LayerMoments(*want, 0, 0.0), big, offsets, y)
    err = max(float((g - w).abs().max()) for g, w in zip(got, want))
    ok &= err <= 1e-9
    print(f"gathered read past 2^31 elements ({big.numel()}): max abs difference {err:.2e}")
    return ok


def bench_model(shape: Shape, iters: int) -> None:
    """Forward with statistics hooks / bare forward on a random Qwen2 of Qwen1.5-1.8B's shape.

    TODO(lead): once skn.engine.probe.statistics_pass calls the gathered kernel from its down_proj hooks, time
    statistics_pass itself here (random model wrapped with skn.models.model.wrap_loaded) instead of these hooks.
    """
    from transformers import AutoModelForCausalLM, Qwen2Config

    from skn.kernels.pearson_gather import update_layer_gathered_triton_
    from skn.kernels.pearson_update import update_layer_triton_
    from skn.inputs.layout import gather_prompt_rows
    from skn.statistics.stats import LayerMoments

    s, dev = shape, torch.device("cuda")
    config = Qwen2Config(
        vocab_size=151936, hidden_size=2048, intermediate_size=s.width, num_hidden_layers=s.layers,
        num_attention_heads=16, num_key_value_heads=16, max_position_embeddings=4096,
    )
    with dev:
        model = AutoModelForCausalLM.from_config(config, torch_dtype=s.dtype).eval()  # type: ignore[no-untyped-call]
    gen = torch.Generator(device=dev).manual_seed(2)
    ids = torch.randint(0, config.vocab_size, (s.batch, s.length), generator=gen, device=dev)
    offsets = torch.randint(1, s.length - s.positions - 16, (s.batch,), generator=gen, device=dev)
    y = torch.randn(s.batch, generator=gen, device=dev, dtype=torch.float64)
    state = [torch.zeros(s.layers, s.positions, s.width, dtype=torch.float64, device=dev) for _ in range(3)]
    downs = [layer.mlp.down_proj for layer in model.model.layers]

    def bare() -> Tensor:
        logits = model(input_ids=ids, use_cache=False).logits[:, :-1].float()
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
        return nll.mean(dim=1)

    def in_pass() -> Tensor:
        handles = [
            down.register_forward_pre_hook(
                lambda mod, args, layer=layer: update_layer_gathered_triton_(
                    LayerMoments(*(t[layer] for t in state), 5, 0.1), args[0], offsets, y
                )
            )
            for layer, down in enumerate(downs)
        ]
        try:
            return bare()
        finally:
            for h in handles:
                h.remove()

    def post_pass() -> Tensor:
        slab: dict[int, Tensor] = {}
        handles = [
            down.register_forward_pre_hook(
                lambda mod, args, layer=layer: slab.__setitem__(layer, gather_prompt_rows(args[0], offsets, s.positions))
            )
            for layer, down in enumerate(downs)
        ]
        try:
            loss = bare()
        finally:
            for h in handles:
                h.remove()
        for layer in range(s.layers):
            update_layer_triton_(LayerMoments(*(t[layer] for t in state), 5, 0.1), slab.pop(layer), loss.double())
        return loss

    with torch.no_grad():
        base = cuda_seconds(bare, iters)
        print(f"real-shaped model, B={s.batch}, T={s.length}: bare forward {base * 1e3:.1f} ms")
        for name, fn in (("in-pass (gathered kernel)", in_pass), ("post-pass (slab + kernel)", post_pass)):
            seconds = cuda_seconds(fn, iters)
            print(f"  {name:<28} {seconds * 1e3:8.1f} ms   probe / bare = {seconds / base:.3f}")


def interpreter_check() -> int:
    """Small shapes through Triton's interpreter: every kernel against the torch path."""
    os.environ["TRITON_INTERPRET"] = "1"  # before the kernel modules are imported
    from skn.kernels.launch import LaunchConfig
    from skn.kernels.pearson_gated import update_layer_gated_triton_
    from skn.kernels.pearson_gather import update_layer_gathered_triton_
    from skn.kernels.pearson_update import update_layer_triton_
    from skn.kernels.reference import update_layer_gated_torch_, update_layer_gathered_torch_
    from skn.statistics.stats import LayerMoments, update_layer_torch_

    gen = torch.Generator().manual_seed(0)
    config = LaunchConfig(block_m=16, block_b=4)
    b, p, m, t = 6, 3, 37, 11
    worst = 0.0
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        start = [torch.randn(p, m, dtype=torch.float64, generator=gen) for _ in range(3)]
        start[1] = start[1].abs()
        acts = torch.randn(b, p, m, generator=gen).to(dtype)
        x = torch.randn(b, t, m, generator=gen).to(dtype)
        up = torch.randn(b, t, m, generator=gen).to(dtype)
        offsets = torch.randint(0, t - p + 1, (b,), generator=gen)
        y = torch.randn(b, dtype=torch.float64, generator=gen)
        pairs: list[tuple[str, Callable[[list[Tensor]], None], Callable[[list[Tensor]], None]]] = [
            ("post-pass", lambda s: update_layer_triton_(LayerMoments(*s, 4, 0.3), acts, y, config=config),
             lambda s: update_layer_torch_(LayerMoments(*s, 4, 0.3), acts, y)),
            ("gathered", lambda s: update_layer_gathered_triton_(LayerMoments(*s, 4, 0.3), x, offsets, y, config=config),
             lambda s: update_layer_gathered_torch_(LayerMoments(*s, 4, 0.3), x, offsets, y)),
        ]
        if dtype == torch.bfloat16:  # fp16/fp32 SiLU: numpy's exp vs torch's may differ in the last bit on CPU
            pairs.append(("gated", lambda s: update_layer_gated_triton_(LayerMoments(*s, 4, 0.3), x, up, offsets, y, config=config),
                          lambda s: update_layer_gated_torch_(LayerMoments(*s, 4, 0.3), x, up, offsets, y)))
        for name, kernel, reference in pairs:
            got, want = [u.clone() for u in start], [u.clone() for u in start]
            kernel(got)
            reference(want)
            err = max_rel(got, want)
            worst = max(worst, err)
            print(f"{str(dtype):<15} {name:<10} max relative difference to torch: {err:.2e}")
    print("equality check:", "PASS" if worst <= 1e-6 else "FAIL", f"(worst {worst:.2e}, bound 1e-6)")
    return 0 if worst <= 1e-6 else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--width", type=int, default=5504)
    parser.add_argument("--positions", type=int, default=20)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=128, help="tokens per row for the in-pass modes and the model")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--skip-model", action="store_true", help="no real-shaped model (needs ~8 GB)")
    args = parser.parse_args()
    shape = Shape(args.layers, args.width, args.positions, args.batch, args.length, DTYPES[args.dtype])
    print(
        f"shape: {shape.layers} layers, {shape.width} neurons, P={shape.positions}, B={shape.batch}, {args.dtype}; "
        f"floor per batch {shape.floor_bytes(1) / 1e6:.1f} MB ({shape.floor_bytes(2) / 1e6:.1f} MB gated), "
        f"{shape.flops() / 1e9:.2f} GFLOP float64"
    )
    if not torch.cuda.is_available():
        print("CUDA is not available here: no GPU figures; running the interpreter-mode equality check instead.")
        return interpreter_check()
    print(f"device: {torch.cuda.get_device_name()}")
    bench_updates(shape, args.iters)
    exact = check_exactness(shape)
    if not args.skip_model:
        bench_model(shape, max(3, args.iters // 4))
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(main())
