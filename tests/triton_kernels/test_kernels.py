"""The Triton statistics kernels equal the torch path, under Triton's CPU interpreter.

Triton decides interpreter or compiler when a function is *decorated*, from TRITON_INTERPRET in the
environment, and triton.language decorates its own functions (tl.sum, ...) when triton is first imported.
So the variable must be set before the first `import triton` of the process: it is set here, at collection,
and if some earlier module imported triton without it, every test here fails saying so (the cure is to set
TRITON_INTERPRET=1 at the top of tests/conftest.py or in the environment).

Tolerances: both paths convert fp32/fp16/bf16 inputs exactly to float64 and differ only in the order of
float64 sums, so every statistic agrees to ~1e-14 relative in every input dtype; the tests ask 1e-6.
The gated kernel's SiLU uses numpy's exp under the interpreter (libdevice's on CUDA), which may differ from
torch's CPU SiLU in the last float32 bit: there the kernel is held bit-exact to the same formula over numpy
and within two units of the model dtype of torch's (bit-exact in bf16 on these data).
"""

from __future__ import annotations

import os

os.environ["TRITON_INTERPRET"] = "1"

from collections.abc import Callable  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

triton = pytest.importorskip("triton")

from triton.runtime.interpreter import InterpretedFunction  # noqa: E402

import skn.kernels.pearson_gated as _gated  # noqa: E402
import skn.kernels.pearson_gather as _gather  # noqa: E402
import skn.kernels.pearson_update as _update  # noqa: E402
from skn.statistics.backend import Backend, gated_update, gathered_update, layer_update  # noqa: E402
from skn.errors import InternalError, UsageError  # noqa: E402
from skn.kernels.launch import LaunchConfig, require_runnable  # noqa: E402
from skn.kernels.reference import gated_activation, update_layer_gated_torch_, update_layer_gathered_torch_  # noqa: E402
from skn.inputs.layout import gather_prompt_rows  # noqa: E402
from skn.statistics.stats import LayerMoments, StatsAccumulator, TorchLayerUpdate, update_layer_torch_  # noqa: E402

_NOT_INTERPRETED = [
    name
    for name, fn in (("tl.sum", triton.language.standard.sum), ("pearson_update_kernel", _update.pearson_update_kernel))
    if not isinstance(fn, InterpretedFunction)
]


@pytest.fixture(autouse=True)
def _interpreter_mode() -> None:
    if _NOT_INTERPRETED:
        pytest.fail(
            f"{', '.join(_NOT_INTERPRETED)} compiled, not interpreted: triton was imported before TRITON_INTERPRET=1 "
            "was set; set it at the top of tests/conftest.py (or in the environment)"
        )


DTYPES = [torch.float32, torch.float16, torch.bfloat16]
SMALL = LaunchConfig(block_m=16, block_b=2)  # several neuron blocks and row chunks even on tiny shapes


def _state(positions: int, width: int, gen: torch.Generator) -> list[Tensor]:
    """A non-trivial running state, as after some earlier batches."""
    mean = torch.randn(positions, width, generator=gen, dtype=torch.float64)
    m2 = torch.rand(positions, width, generator=gen, dtype=torch.float64) * 5
    c = torch.randn(positions, width, generator=gen, dtype=torch.float64)
    return [mean, m2, c]


def _assert_same(got: list[Tensor], want: list[Tensor], rtol: float = 1e-6) -> None:
    for name, g, w in zip(("mean_x", "m2_x", "c_xy"), got, want):
        torch.testing.assert_close(g, w, rtol=rtol, atol=1e-12, msg=lambda m: f"{name}: {m}")


def _differs(got: list[Tensor], want: list[Tensor]) -> bool:
    return any(not torch.allclose(g, w, rtol=1e-3, atol=1e-6) for g, w in zip(got, want))


# (batch, positions, width, length): odd m, P=1, B=1, a single row with a long instruction
SHAPES = [(5, 3, 37, 9), (1, 1, 5, 4), (3, 1, 16, 6), (1, 2, 21, 40)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES[:3])
def test_post_pass_kernel_equals_torch(shape: tuple[int, int, int, int], dtype: torch.dtype) -> None:
    batch, positions, width, _ = shape
    gen = torch.Generator().manual_seed(batch * 100 + width)
    acts = (torch.randn(batch, positions, width, generator=gen) * 2 + 0.5).to(dtype)
    y = torch.randn(batch, generator=gen, dtype=torch.float64)
    want = _state(positions, width, gen)
    got = [t.clone() for t in want]
    update_layer_torch_(LayerMoments(*want, 7, 0.25), acts, y)
    _update.update_layer_triton_(LayerMoments(*got, 7, 0.25), acts, y, config=SMALL)
    _assert_same(got, want)


def _offsets(batch: int, positions: int, length: int, gen: torch.Generator) -> Tensor:
    """Ragged prompt starts; the last row has the longest instruction the sequence allows."""
    offsets = torch.randint(0, length - positions + 1, (batch,), generator=gen)
    offsets[-1] = length - positions
    return offsets


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_gathered_kernel_equals_torch(shape: tuple[int, int, int, int], dtype: torch.dtype) -> None:
    batch, positions, width, length = shape
    gen = torch.Generator().manual_seed(batch * 100 + width + 1)
    x = torch.randn(batch, length, width, generator=gen).to(dtype)
    offsets = _offsets(batch, positions, length, gen)
    y = torch.randn(batch, generator=gen, dtype=torch.float64)
    want = _state(positions, width, gen)
    got = [t.clone() for t in want]
    update_layer_gathered_torch_(LayerMoments(*want, 3, -1.5), x, offsets, y)
    _gather.update_layer_gathered_triton_(LayerMoments(*got, 3, -1.5), x, offsets, y, config=SMALL)
    _assert_same(got, want)
    # a deliberately wrong offset (one row one token late) must show
    wrong = [t.clone() for t in got]
    update_layer_gathered_torch_(LayerMoments(*wrong, 3, -1.5), x, offsets - (offsets > 0).long(), y)
    later = offsets.clone()
    later[-1] -= 1
    moved = [t.clone() for t in want]
    _gather.update_layer_gathered_triton_(LayerMoments(*moved, 3, -1.5), x, later, y, config=SMALL)
    assert _differs(moved, got)


def test_gathered_kernel_follows_strides() -> None:
    """A non-contiguous input (a view into a wider buffer, time-major) reads the same rows."""
    gen = torch.Generator().manual_seed(5)
    batch, positions, width, length = 3, 2, 19, 7
    wide = torch.randn(length, batch, width + 4, generator=gen)
    x = wide[:, :, 2 : 2 + width].transpose(0, 1)
    assert not x.is_contiguous()
    offsets = _offsets(batch, positions, length, gen)
    y = torch.randn(batch, generator=gen, dtype=torch.float64)
    want = _state(positions, width, gen)
    got = [t.clone() for t in want]
    update_layer_gathered_torch_(LayerMoments(*want, 2, 0.0), x, offsets, y)
    _gather.update_layer_gathered_triton_(LayerMoments(*got, 2, 0.0), x, offsets, y, config=SMALL)
    _assert_same(got, want)


def _silu_times_up_numpy(gate: Tensor, up: Tensor) -> Tensor:
    """The kernel's formula with numpy's exp and division (what the interpreter runs), HF's roundings."""
    g = gate.float().numpy()
    s = torch.from_numpy(g / (np.float32(1.0) + np.exp(-g))).to(gate.dtype)
    return (s.float() * up.float()).to(gate.dtype)


def _kernel_activation(gate: Tensor, up: Tensor) -> Tensor:
    """The activation the gated kernel forms: one row (B=1) into an empty state leaves mean_x = act exactly."""
    _, length, width = gate.shape
    state = [torch.zeros(length, width, dtype=torch.float64) for _ in range(3)]
    offsets = torch.zeros(1, dtype=torch.int64)
    _gated.update_layer_gated_triton_(LayerMoments(*state, 0, 0.0), gate, up, offsets, torch.zeros(1, dtype=torch.float64))
    return state[0]


@pytest.mark.parametrize("dtype", DTYPES)
def test_gated_kernel_forms_the_activation_as_hugging_face(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(6)
    gate = (torch.randn(1, 4, 300, generator=gen) * 4).to(dtype)
    up = (torch.randn(1, 4, 300, generator=gen) * 2).to(dtype)
    got = _kernel_activation(gate, up)
    # exactly the formula, every rounding where HF rounds (this is what fails if a rounding is moved)
    assert torch.equal(got, _silu_times_up_numpy(gate, up)[0].double())
    torch_act = gated_activation(gate, up)[0].double()
    if dtype == torch.bfloat16:
        assert torch.equal(got, torch_act)
    else:
        eps = torch.finfo(dtype).eps
        assert bool(((got - torch_act).abs() <= 2 * eps * torch_act.abs()).all())
    fused = (torch.nn.functional.silu(gate.float()) * up.float()).to(dtype)[0].double()
    if dtype != torch.float32:
        assert not torch.equal(got, fused)


def test_gated_kernel_on_hugging_face_tensors() -> None:
    """gate_proj and up_proj outputs of a bf16 Qwen2 MLP: the kernel's activation is the down_proj input."""
    from transformers import Qwen2Config
    from transformers.models.qwen2.modeling_qwen2 import Qwen2MLP

    torch.manual_seed(7)
    config = Qwen2Config(hidden_size=16, intermediate_size=40, num_attention_heads=2, num_key_value_heads=1)
    mlp = Qwen2MLP(config).to(torch.bfloat16)  # type: ignore[no-untyped-call]
    seen: dict[str, Tensor] = {}
    mlp.gate_proj.register_forward_hook(lambda m, a, out: seen.__setitem__("gate", out))
    mlp.up_proj.register_forward_hook(lambda m, a, out: seen.__setitem__("up", out))
    mlp.down_proj.register_forward_pre_hook(lambda m, args: seen.__setitem__("act", args[0]))
    with torch.no_grad():
        mlp(torch.randn(1, 6, 16).to(torch.bfloat16) * 3)
    assert torch.equal(_kernel_activation(seen["gate"], seen["up"]), seen["act"][0].double())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [SHAPES[0], SHAPES[1], SHAPES[3]])
def test_gated_kernel_equals_torch(shape: tuple[int, int, int, int], dtype: torch.dtype) -> None:
    batch, positions, width, length = shape
    gen = torch.Generator().manual_seed(batch * 100 + width + 2)
    gate = (torch.randn(batch, length, width, generator=gen) * 3).to(dtype)
    up = torch.randn(batch, length, width, generator=gen).to(dtype)
    offsets = _offsets(batch, positions, length, gen)
    y = torch.randn(batch, generator=gen, dtype=torch.float64)
    want = _state(positions, width, gen)
    got = [t.clone() for t in want]
    # the reference activation is the kernel's formula (see the module docstring); bf16 is torch's own
    act = gather_prompt_rows(_silu_times_up_numpy(gate, up), offsets, positions)
    if dtype == torch.bfloat16:
        update_layer_gated_torch_(LayerMoments(*want, 4, 0.5), gate, up, offsets, y)
    else:
        update_layer_torch_(LayerMoments(*want, 4, 0.5), act, y)
    _gated.update_layer_gated_triton_(LayerMoments(*got, 4, 0.5), gate, up, offsets, y, config=SMALL)
    _assert_same(got, want)
    if batch > 1:  # the same offsets with gate and up swapped is a different activation
        swapped = [t.clone() for t in want]
        _gated.update_layer_gated_triton_(LayerMoments(*swapped, 4, 0.5), up, gate, offsets, y, config=SMALL)
        assert _differs(swapped, got)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_running_merge_over_ragged_batches_against_numpy(dtype: torch.dtype) -> None:
    """Batches of 3, 1 and 6 rows merged from empty (offset 1e3 on every activation) == one numpy pass."""
    gen = torch.Generator().manual_seed(8)
    positions, width, length = 2, 23, 8
    state = [torch.zeros(positions, width, dtype=torch.float64) for _ in range(3)]
    count, mean_y = 0, 0.0
    rows: list[Tensor] = []
    ys: list[Tensor] = []
    for batch in (3, 1, 6):
        x = (1e3 + torch.randn(batch, length, width, generator=gen)).to(dtype)
        offsets = torch.randint(0, length - positions + 1, (batch,), generator=gen)
        y = torch.randn(batch, generator=gen, dtype=torch.float64) + 10
        _gather.update_layer_gathered_triton_(LayerMoments(*state, count, mean_y), x, offsets, y, config=SMALL)
        rows.append(gather_prompt_rows(x, offsets, positions).double())
        ys.append(y)
        mean_y = (mean_y * count + float(y.sum())) / (count + batch)
        count += batch
    acts = torch.cat(rows).numpy()
    yv = torch.cat(ys).numpy()
    dx = acts - acts.mean(axis=0)
    want = [acts.mean(axis=0), (dx**2).sum(axis=0), np.einsum("n,npm->pm", yv - yv.mean(), dx)]
    _assert_same(state, [torch.from_numpy(w) for w in want], rtol=1e-9)


def test_accumulator_with_the_triton_backend_equals_torch() -> None:
    """The backend hook the probe uses: StatsAccumulator.add_batch with either update function."""
    gen = torch.Generator().manual_seed(9)
    layers, positions, width = 2, 3, 17
    torch_acc = StatsAccumulator(layers, positions, width, update_layer=layer_update(Backend.TORCH, torch.device("cpu")))
    triton_acc = StatsAccumulator(layers, positions, width, update_layer=layer_update(Backend.TRITON, torch.device("cpu")))
    for batch in (4, 1, 3):
        acts = torch.randn(layers, batch, positions, width, generator=gen).to(torch.bfloat16)
        y = torch.randn(batch, generator=gen, dtype=torch.float64)
        torch_acc.add_batch(acts, y)
        triton_acc.add_batch(acts, y)
    a, b = torch_acc.snapshot(), triton_acc.snapshot()
    _assert_same([b.mean_x, b.m2_x, b.c_xy], [a.mean_x, a.m2_x, a.c_xy])


def test_backend_dispatch() -> None:
    cpu = torch.device("cpu")
    assert isinstance(layer_update(Backend.AUTO, cpu), TorchLayerUpdate)
    assert gathered_update(Backend.TORCH, cpu) is update_layer_gathered_torch_
    assert gated_update(Backend.AUTO, cpu) is update_layer_gated_torch_
    assert layer_update(Backend.TRITON, cpu) is _update.update_layer_triton_
    assert gathered_update(Backend.TRITON, cpu) is _gather.update_layer_gathered_triton_
    assert gated_update(Backend.TRITON, cpu) is _gated.update_layer_gated_triton_


def test_launcher_errors() -> None:
    with pytest.raises(UsageError, match="needs a CUDA device"):
        require_runnable(object(), torch.device("cpu"))
    state = [torch.zeros(2, 8, dtype=torch.float64) for _ in range(3)]
    y = torch.zeros(3, dtype=torch.float64)
    launch: Callable[..., None] = _gather.update_layer_gathered_triton_
    with pytest.raises(InternalError, match="int64"):
        launch(LayerMoments(*state, 0, 0.0), torch.zeros(3, 5, 8), torch.zeros(3, dtype=torch.int32), y)
    with pytest.raises(InternalError, match=r"must be \[3, \*, 8\]"):
        launch(LayerMoments(*state, 0, 0.0), torch.zeros(3, 5, 9), torch.zeros(3, dtype=torch.int64), y)
    with pytest.raises(InternalError, match="dtype"):
        launch(LayerMoments(*state, 0, 0.0), torch.zeros(3, 5, 8, dtype=torch.float64), torch.zeros(3, dtype=torch.int64), y)
    with pytest.raises(InternalError, match="float64"):
        launch(LayerMoments(*[t.float() for t in state], 0, 0.0), torch.zeros(3, 5, 8), torch.zeros(3, dtype=torch.int64), y)
    with pytest.raises(InternalError, match="metric"):
        launch(LayerMoments(*state, 0, 0.0), torch.zeros(3, 5, 8), torch.zeros(3, dtype=torch.int64), y[:2])
    with pytest.raises(InternalError, match="power of two"):
        LaunchConfig(block_m=48)


@pytest.mark.parametrize("metric", ["loss", "score"])  # after the pass (post-pass mode) / before it (in-pass)
def test_probe_with_the_triton_backend_writes_the_same_corr(metric: str) -> None:
    from helpers import tiny_loaded

    from skn.engine.api import probe

    from skn.engine.probe_config import ProbeConfig
    from skn.inputs.data import Example
    from skn.inputs.layout import Template
    from skn.training.prompt import init_prompt

    loaded = tiny_loaded("qwen2")
    words = ["red fish", "a blue frog", "the tall green house by the sea", "Max", "one day Sam lost a ball"]
    data = [
        Example(f"Once {words[i % 5]} {i}.", f" It was {i % 3}.", {"score": float((i * 7) % 5)}, f"row {i}")
        for i in range(11)
    ]
    prompt = init_prompt(loaded, 3, seed=0)
    corr = {}
    for backend in (Backend.TORCH, Backend.TRITON):
        config = ProbeConfig(batch_size=4, top_k=3, backend=backend, template=Template.PLAIN)
        corr[backend] = probe(loaded, prompt, data, metric, config).corr
    assert torch.equal(corr[Backend.TORCH].isnan(), corr[Backend.TRITON].isnan())
    assert float((corr[Backend.TORCH] - corr[Backend.TRITON]).nan_to_num().abs().max()) <= 1e-5
