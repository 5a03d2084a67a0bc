"""GGUF models: finding the file, the missing-extra error, and the real SmolLM2 file in ../shared."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from skn.inputs.data import Example
from skn.errors import ModelError
from skn.models.gguf import find_gguf, require_gguf_support

from helpers import SHARED

SMOL = SHARED / "models" / "smollm2-135m-instruct"
SMOL_FILE = SMOL / "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_find_gguf(tmp_path: Path) -> None:
    assert find_gguf("Qwen/Qwen1.5-1.8B-Chat") is None
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "m.Q4.gguf").write_bytes(b"")
    found = find_gguf(str(tmp_path / "one"))
    assert found is not None and found.path == tmp_path / "one" / "m.Q4.gguf"
    direct = find_gguf(str(tmp_path / "one" / "m.Q4.gguf"))
    assert direct is not None and direct.name == "m.Q4.gguf"
    (tmp_path / "one" / "other.gguf").write_bytes(b"")
    with pytest.raises(ModelError, match="2 GGUF files"):
        find_gguf(str(tmp_path / "one"))
    (tmp_path / "one" / "config.json").write_text("{}")
    assert find_gguf(str(tmp_path / "one")) is None  # a Hugging Face folder that also holds a .gguf
    with pytest.raises(ModelError, match="no such GGUF file"):
        find_gguf(str(tmp_path / "missing.gguf"))


def test_missing_extra_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real(name, *a))
    with pytest.raises(ModelError, match=r"gguf: pip install 'skn\[gguf\]'"):
        require_gguf_support()


@pytest.mark.slow
@pytest.mark.skipif(not SMOL_FILE.is_file(), reason="../shared/models/smollm2-135m-instruct is absent")
def test_smollm2_gguf_probe_equals_plain_folder(tmp_path: Path) -> None:
    pytest.importorskip("gguf")
    from transformers import LlamaForCausalLM

    from skn.engine.api import probe

    from skn.engine.probe_config import ProbeConfig
    from skn.models.model import load_model

    loaded = load_model(str(SMOL), device="cpu")
    assert (loaded.sites.num_layers, loaded.sites.width) == (30, 1536)
    assert "dequantized" in loaded.weights and getattr(loaded.tokenizer, "chat_template", None)
    # the same weights as a plain Hugging Face folder
    plain = LlamaForCausalLM(loaded.model.config)  # type: ignore[arg-type]
    plain.load_state_dict(loaded.model.state_dict())
    plain.config.quantization_config = None  # type: ignore[attr-defined]
    if hasattr(plain.config, "quantization_config"):
        del plain.config.quantization_config
    plain.save_pretrained(tmp_path / "plain")
    loaded.tokenizer.save_pretrained(tmp_path / "plain")  # type: ignore[attr-defined]
    other = load_model(str(tmp_path / "plain"), device="cpu")
    assert other.weights == ""
    examples = [Example(f"What is {a} plus {b}?", f" {a + b}", {"big": a + b > 9}, f"gen:{i}")
                for i, (a, b) in enumerate([(1, 2), (7, 8), (3, 3), (9, 9), (2, 5), (6, 7), (0, 1), (8, 4)])]
    prompt = torch.randn(2, loaded.hidden_size, generator=torch.Generator().manual_seed(0)) * 0.02
    config = ProbeConfig(batch_size=4, top_k=3)
    first = probe(loaded, prompt, examples, "big==true", config)
    second = probe(other, prompt, examples, "big==true", config)
    assert torch.equal(torch.nan_to_num(first.corr, nan=9.0), torch.nan_to_num(second.corr, nan=9.0))
    assert first.neurons == second.neurons and first.info.weights and not second.info.weights


@pytest.mark.slow
@pytest.mark.skipif(not SMOL_FILE.is_file(), reason="../shared/models/smollm2-135m-instruct is absent")
def test_smollm2_gguf_memory_plan_reads_the_file() -> None:
    """`skn probe --model GGUF_FOLDER` plans its memory before loading: the config and tokenizer come from the
    GGUF file (a folder with no config.json), the shape is SmolLM2's."""
    pytest.importorskip("gguf")
    from skn.inputs.layout import Template
    from skn.engine.memory import plan_from_config
    from skn.models.model import DType
    from skn.models.quantize import Quantize

    examples = [Example("What is 12 times 11?", " 132", {}, "gen:0")]
    memory, work = plan_from_config(str(SMOL), False, "cpu", DType.FLOAT32, Quantize.NONE, examples, Template.AUTO,
                                    4, 2, training=False, gradient_checkpointing=False, metric_after_pass=False)
    weights_fp32 = 134_515_008 * 4  # SmolLM2-135M's parameters (tied embeddings) in float32
    assert abs(memory.weights_bytes - weights_fp32) / weights_fp32 < 0.05
    assert work.prompt_len == 4 and work.seq_len > 4 + 5
