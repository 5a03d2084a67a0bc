"""Bad inputs at load time (issue #33): a checkpoint that does not fit its config, --neuron-module and
--trust-remote-code in the memory plan, the plan's batch capped at the items, a --null too large for the
machine, encoder models, a library's message of many lines; and (issue #34) dtype names and GGUF files.

Every CLI case runs `skn` through `main()` and checks the exit code, that the message names what is at
fault, that no traceback is printed and that there is at most one `error:` line.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import skn.engine.memory
import skn.engine.run
from helpers import STORIES, char_tokenizer, one_error, run_main, save_model, tiny_model, write_data
from skn.cli.errors import ONE_LINE_LIMIT, one_line
from skn.errors import ModelError, UsageError
from skn.engine.memory import MemoryPlan, Workload, advice, check_fits, model_shape, plan
from skn.models.load_checks import check_loading_info
from skn.models.model import DType, as_dtype, load_model, pick_dtype, wrap_loaded
from skn.engine.preflight import check_model_path
from skn.models.quantize import Quantize
from skn.engine.request import ModelRequest

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = ["--steps", "2", "--eval-every", "2", "--prompt-len", "2", "--batch-size", "8", "--top-k", "3"]
SMOL_FILE = STORIES.parent / "smollm2-135m-instruct" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def edit_config(folder: Path, **changes: object) -> None:
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("data")
    return write_data(base / "train.jsonl", 16, 0), write_data(base / "val.jsonl", 12, 1)


def train_args(model: Path, data: tuple[Path, Path], out: Path, *extra: str) -> list[str]:
    return ["train", "--model", str(model), "--data", str(data[0]), "--val-data", str(data[1]), "--out", str(out),
            "--steps", "1", "--eval-every", "1", "--prompt-len", "2", *extra]


def probe_args(model: Path, data: tuple[Path, Path], *extra: str) -> list[str]:
    return ["probe", "--model", str(model), "--data", str(data[0]), "--val-data", str(data[1]), *FAST, *extra]


# ---------------------------------------------------------------- 1. a checkpoint that does not fit its config


def more_layers(tmp: Path) -> Path:
    folder = save_model(tiny_model("llama"), tmp / "m")
    edit_config(folder, num_hidden_layers=5)  # the checkpoint has 3
    return folder


def other_architecture(tmp: Path) -> Path:
    folder = save_model(tiny_model("gpt2"), tmp / "m")
    llama = save_model(tiny_model("llama"), tmp / "llama")
    shutil.copy(llama / "config.json", folder / "config.json")  # a Llama config over GPT-2 weights
    return folder


def wider_ffn(tmp: Path) -> Path:
    folder = save_model(tiny_model("llama"), tmp / "m")
    edit_config(folder, intermediate_size=44)  # the checkpoint's is 40
    return folder


def stories_with_seven_layers(tmp: Path) -> Path:
    if not (STORIES / "config.json").is_file():
        pytest.skip(f"{STORIES} is absent")
    folder = tmp / "stories"
    shutil.copytree(STORIES, folder)
    edit_config(folder, num_hidden_layers=7)
    return folder


@pytest.fixture
def transformers_errors_only() -> Iterator[None]:
    """transformers' own load report (a warning of many lines) off: its handler may hold an earlier test's
    captured stream."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    yield
    hf_logging.set_verbosity(level)


@pytest.mark.usefixtures("transformers_errors_only")
@pytest.mark.parametrize(("make", "needles"), [
    (more_layers, ("18 weight(s) missing", "model.layers.3.")),
    (other_architecture, ("missing", "lm_head.weight", "no place in the model", "transformer.h.0.")),
    (wider_ffn, ("9 weight(s) of another shape", "model.layers.0.mlp.down_proj.weight")),
    (stories_with_seven_layers, ("18 weight(s) missing", "model.layers.5.")),
], ids=["more-layers", "llama-config-over-gpt2", "wider-ffn", "stories-7-layers"])
def test_checkpoint_that_does_not_fit_its_config_is_refused(make: object, needles: tuple[str, ...], data: tuple[Path, Path],
                                                            tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = make(tmp_path)  # type: ignore[operator]
    code, output = run_main(train_args(folder, data, tmp_path / "R"), capsys)
    one_error(output, code, 2, "do not fit its config", *needles)
    assert not (tmp_path / "R" / "prompt.safetensors").exists()


@pytest.mark.parametrize("arch", ["qwen2", "llama", "gpt2"])
def test_saved_models_still_load(arch: str, tmp_path: Path) -> None:
    """save_pretrained folders (GPT-2 and Qwen2 with lm_head tied to the embeddings) load as before."""
    loaded = load_model(str(save_model(tiny_model(arch), tmp_path / arch)), device="cpu")
    assert loaded.sites.num_layers == tiny_model(arch).config.num_hidden_layers  # type: ignore[union-attr]


def test_tied_weights_and_buffers_are_no_missing_weights() -> None:
    model = tiny_model("gpt2")  # lm_head tied to the embeddings
    assert model.lm_head.weight is model.transformer.wte.weight
    check_loading_info("m", model, {"missing_keys": {"lm_head.weight"}, "unexpected_keys": set(),
                                    "mismatched_keys": set(), "error_msgs": []})
    llama = tiny_model("llama")  # rotary inv_freq: a buffer, computed, never loaded
    check_loading_info("m", llama, {"missing_keys": {"model.rotary_emb.inv_freq"},
                                    "unexpected_keys": {"model.layers.0.self_attn.rotary_emb.inv_freq"}})
    with pytest.raises(ModelError, match=r"1 weight\(s\) missing .*lm_head.weight"):  # llama's lm_head is its own
        check_loading_info("m", llama, {"missing_keys": {"lm_head.weight"}})
    with pytest.raises(ModelError, match=r"2 weight\(s\) missing .*lm_head.weight, transformer.wte.weight"):
        check_loading_info("m", model, {"missing_keys": {"lm_head.weight", "transformer.wte.weight"}})
    with pytest.raises(ModelError, match=r"1 weight\(s\) of the checkpoint with no place .*extra.weight"):
        check_loading_info("m", model, {"unexpected_keys": ["extra.weight"]})


# ---------------------------------------------------------------- 2. --neuron-module and --trust-remote-code in the plan


def tiny_mpt(folder: Path) -> Path:
    """A decoder outside skn's adapter table whose FFN no known suffix finds (transformer.blocks.{i}.ffn.down_proj)."""
    from transformers import AutoModelForCausalLM, MptConfig

    torch.manual_seed(0)
    config = MptConfig(d_model=32, n_heads=4, n_layers=2, vocab_size=90, max_seq_len=256, expansion_ratio=2)
    return save_model(AutoModelForCausalLM.from_config(config), folder)


def test_plan_uses_the_neuron_module_given(data: tuple[Path, Path], tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    folder = tiny_mpt(tmp_path / "mpt")
    code, output = run_main(probe_args(folder, data, "--dry-run"), capsys)
    one_error(output, code, 2, "--neuron-module")  # without the flag skn asks for it
    code, output = run_main(probe_args(folder, data, "--dry-run", "--neuron-module", "transformer.blocks.{i}.ffn.down_proj"),
                            capsys)
    assert code == 0 and output.startswith("memory plan on cpu"), output


REMOTE_CONFIG = 'from transformers import LlamaConfig\n\n\nclass TinyConfig(LlamaConfig):\n    model_type = "tinyremote"\n'
REMOTE_MODEL = """from transformers import LlamaForCausalLM

from .configuration_tiny import TinyConfig


class TinyForCausalLM(LlamaForCausalLM):
    config_class = TinyConfig
"""


def test_plan_with_trust_remote_code(data: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A model with its own code (auto_map), which loads only with --trust-remote-code: the plan builds it too."""
    folder = save_model(tiny_model("llama"), tmp_path / "remote")
    (folder / "configuration_tiny.py").write_text(REMOTE_CONFIG)
    (folder / "modeling_tiny.py").write_text(REMOTE_MODEL)
    edit_config(folder, model_type="tinyremote", architectures=["TinyForCausalLM"],
                auto_map={"AutoConfig": "configuration_tiny.TinyConfig",
                          "AutoModelForCausalLM": "modeling_tiny.TinyForCausalLM"})
    code, output = run_main(probe_args(folder, data, "--dry-run", "--trust-remote-code"), capsys)
    assert code == 0 and output.startswith("memory plan on cpu"), output


def test_model_that_cannot_be_planned_still_runs(saved_tiny_model: Path, data: tuple[Path, Path], tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """A model whose own code cannot be built on the meta device: no plan, one line saying so, and the run goes on."""
    def on_meta(*args: object, **kwargs: object) -> None:
        raise RuntimeError("Tensor.item() cannot be called on meta tensors\n(more of the library's text)")

    monkeypatch.setattr("transformers.AutoModelForCausalLM.from_config", on_meta)
    code, output = run_main(probe_args(saved_tiny_model, data, "--out", str(tmp_path / "R")), capsys)
    assert code == 0, output
    assert "no memory plan: Qwen2Config cannot be built on the meta device (RuntimeError: Tensor.item()" in output
    assert (tmp_path / "R" / "run.json").is_file()


# ---------------------------------------------------------------- 3. the plan's batch is capped at the items


def test_plan_caps_the_batch_at_the_items(saved_tiny_model: Path, data: tuple[Path, Path],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    peaks = []
    for batch in ("16", "100000"):  # 16 training and 12 validation examples
        args = ["probe", "--model", str(saved_tiny_model), "--data", str(data[0]), "--val-data", str(data[1]),
                "--batch-size", batch, "--dry-run", "--json"]
        code, output = run_main(args, capsys)
        assert code == 0, output
        peaks.append(json.loads(output.strip().splitlines()[-1])["peak_bytes"])
    assert peaks[0] == peaks[1]
    work = Workload(100000, 50, 6, 5, True, False, True, probe_examples=12, train_examples=16)
    assert (work.probe_batch, work.train_batch) == (12, 16)


# ---------------------------------------------------------------- 4. a --null too large for the machine


def test_null_memory_and_advice() -> None:
    shape = model_shape(tiny_model("llama").config)
    cells = shape.layers * 5 * shape.width
    r = 10**7
    work = Workload(4, 50, 6, 5, True, False, True, null_permutations=r, probe_examples=12)
    on_gpu = plan(shape, work, torch.float32, Quantize.NONE, torch.device("cuda"), None)
    assert on_gpu.null_bytes == (4 * (r + 1) + 24 * r) * cells
    on_cpu = plan(shape, work, torch.float32, Quantize.NONE, torch.device("cpu"), free_bytes=2**30)
    text = advice(on_cpu, work)
    assert text.split("try ")[1].startswith("fewer permutations in --null (now 10000000"), text
    with pytest.raises(UsageError, match="--null"):
        check_fits(on_cpu, work)  # a CPU run needing far more than the machine has stops before loading
    small = plan(shape, Workload(4, 50, 6, 5, True, False, True), torch.float32, Quantize.NONE, torch.device("cpu"),
                 free_bytes=1000)
    assert advice(small, Workload(4, 50, 6, 5, True, False, True))
    check_fits(small, Workload(4, 50, 6, 5, True, False, True))  # a small overshoot on a CPU: only a warning
    assert MemoryPlan(**{**small.__dict__, "null_bytes": 0}).null_bytes == 0


def test_null_too_large_stops_before_loading(saved_tiny_model: Path, data: tuple[Path, Path], tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(skn.engine.memory, "free_memory", lambda device: 2**30)
    monkeypatch.setattr(skn.engine.run, "load_requested_model", refuse)
    code, output = run_main(probe_args(saved_tiny_model, data, "--null", "10000000", "--out", str(tmp_path / "R")), capsys)
    one_error(output, code, 2, "fewer permutations in --null (now 10000000")
    assert not (tmp_path / "R").exists()  # refused before the run directory, let alone the weights


# ---------------------------------------------------------------- 5. encoder models


def tiny_bert(folder: Path) -> Path:
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    config = BertConfig(vocab_size=90, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=48, max_position_embeddings=256)
    return save_model(BertForMaskedLM(config), folder)


def tiny_t5(folder: Path) -> Path:
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    config = T5Config(vocab_size=90, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4, decoder_start_token_id=0)
    return save_model(T5ForConditionalGeneration(config), folder)


@pytest.mark.parametrize("command", ["train", "probe"])
def test_encoder_only_model_is_refused(command: str, data: tuple[Path, Path], tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    folder = tiny_bert(tmp_path / "bert")
    extra = ("--neuron-module", "bert.encoder.layer.{i}.output.dense")
    args = train_args(folder, data, tmp_path / "R", *extra) if command == "train" else \
        probe_args(folder, data, "--out", str(tmp_path / "R"), *extra)
    code, output = run_main(args, capsys)
    one_error(output, code, 2, "encoder-only", "bert")
    assert not (tmp_path / "R" / "prompt.safetensors").exists()


def test_encoder_decoder_model_is_refused(data: tuple[Path, Path], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    folder = tiny_t5(tmp_path / "t5")
    code, output = run_main(train_args(folder, data, tmp_path / "R"), capsys)
    one_error(output, code, 2, "encoder-decoder", "t5")


def test_wrapping_an_encoder_is_refused() -> None:
    from transformers import BertConfig, BertLMHeadModel

    model = BertLMHeadModel(BertConfig(vocab_size=90, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                       intermediate_size=48))
    with pytest.raises(ModelError, match="encoder-only"):
        wrap_loaded("bert", model, char_tokenizer(), torch.device("cpu"), "bert.encoder.layer.{i}.output.dense")


# ---------------------------------------------------------------- 6. a library's message of many lines is one line


LIBRARY_MESSAGE = "Unrecognized configuration class <class 'FooConfig'>.\n" + "\n".join(
    f"Model type should be one of Config{i}A, Config{i}B, Config{i}C, Config{i}D." for i in range(26))


def test_library_message_of_many_lines_is_one_line(saved_tiny_model: Path, data: tuple[Path, Path], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise ValueError(LIBRARY_MESSAGE)

    monkeypatch.setattr("transformers.AutoModelForCausalLM.from_pretrained", fail)
    code, output = run_main(train_args(saved_tiny_model, data, tmp_path / "R"), capsys)
    line = one_error(output, code, 2, "cannot load the model", "Unrecognized configuration class", "Config25D.")
    assert "Model type should be one of" not in output.replace(line, "")  # nothing of the message on other lines
    assert len(line) <= len("error: ") + ONE_LINE_LIMIT
    assert LIBRARY_MESSAGE in (tmp_path / "R" / "error.log").read_text()  # the full text, in the run directory


def test_one_line() -> None:
    assert one_line("a plain message") == "a plain message"
    assert one_line("first\n\n  second \nthird") == "first | second | third"
    long = one_line("\n".join(f"line {i} " + "x" * 50 for i in range(40)) + "\n(the hint at the end)")
    assert len(long) <= ONE_LINE_LIMIT and long.startswith("line 0 ") and long.endswith("(the hint at the end)")


# ---------------------------------------------------------------- issue #34: dtype names, GGUF files


@pytest.mark.parametrize(("given", "expected"), [
    ("bfloat16", torch.bfloat16), ("bf16", torch.bfloat16), (torch.bfloat16, torch.bfloat16),
    ("float16", torch.float16), ("fp16", torch.float16), (torch.float16, torch.float16), ("torch.float16", torch.float16),
    ("float32", torch.float32), ("fp32", torch.float32), (torch.float32, torch.float32), ("auto", torch.float32),
    (DType.BFLOAT16, torch.bfloat16),
])
def test_dtype_names(given: object, expected: torch.dtype) -> None:
    assert pick_dtype(given, torch.device("cpu")) == expected  # type: ignore[arg-type]
    if given not in ("auto", DType.AUTO):
        assert pick_dtype(given, torch.device("cuda")) == expected  # type: ignore[arg-type]  # float32 stays float32 on a GPU


@pytest.mark.parametrize("given", ["int8", "float128", torch.complex64, torch.int8, 16])
def test_other_dtypes_are_refused_by_name(given: object) -> None:
    with pytest.raises(UsageError, match=re.escape(f"dtype {given!r}")):
        as_dtype(given)  # type: ignore[arg-type]


def test_load_model_and_request_take_dtype_names(saved_tiny_model: Path) -> None:
    assert load_model(str(saved_tiny_model), dtype="bfloat16", device="cpu").dtype == torch.bfloat16
    assert load_model(str(saved_tiny_model), dtype=torch.float16, device="cpu").dtype == torch.float16
    request = ModelRequest(str(saved_tiny_model), dtype="bfloat16", device="cpu")  # type: ignore[arg-type]
    assert skn.engine.run.load_requested_model(request).dtype == torch.bfloat16


def test_gguf_file_passes_the_path_check(data: tuple[Path, Path], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "model.Q4.gguf"
    broken.write_bytes(b"not a gguf file")
    check_model_path(str(broken))
    with pytest.raises(ModelError, match="no such GGUF file"):
        check_model_path(str(tmp_path / "missing.gguf"))
    code, output = run_main(probe_args(broken, data, "--dry-run"), capsys)
    line = one_error(output, code, 2, str(broken))
    assert "no such folder" not in line


@pytest.mark.slow
@pytest.mark.skipif(not SMOL_FILE.is_file(), reason="../shared/models/smollm2-135m-instruct is absent")
def test_gguf_file_as_model(data: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("gguf")
    code, output = run_main(probe_args(SMOL_FILE, data, "--dry-run", "--json"), capsys)
    assert code == 0, output
    assert json.loads(output.strip().splitlines()[-1])["weights_bytes"] > 0
