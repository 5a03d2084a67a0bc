"""The design card's command as typed, `skn probe --model Qwen/Qwen1.5-1.8B-Chat --metric loss`, run offline
from a Hugging Face cache: a tiny Qwen2 model with a chat template stands under that hub id in the hub's
own cache layout, HF_HOME points at it and HF_HUB_OFFLINE=1 forbids the network. Only options that keep
the run short are added. In a subprocess, because huggingface_hub reads HF_HOME when it is imported."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from skn.engine.request import DataRequest
from skn.inputs.examples_choice import choose_examples, no_data_notice

from helpers import char_tokenizer, tiny_model

HUB_ID = "Qwen/Qwen1.5-1.8B-Chat"
SNAPSHOT = "0123456789abcdef0123456789abcdef01234567"
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


def hub_cache(home: Path) -> Path:
    """HF_HOME/hub/models--Qwen--Qwen1.5-1.8B-Chat/{snapshots/<hash>/..., refs/main} holding a tiny Qwen2."""
    repo = home / "hub" / ("models--" + HUB_ID.replace("/", "--"))
    snapshot = repo / "snapshots" / SNAPSHOT
    tiny_model("qwen2").save_pretrained(snapshot)
    tokenizer = char_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE  # type: ignore[attr-defined]
    tokenizer.save_pretrained(snapshot)  # type: ignore[attr-defined]
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(SNAPSHOT, encoding="utf-8")
    return snapshot


def test_no_data_on_a_named_model_runs_the_generated_arithmetic_task() -> None:
    chosen = choose_examples(DataRequest(train_size=40, val_size=20), bundled_model=False)
    assert chosen.task == "arithmetic" and chosen.default_metric == "loss"
    assert chosen.notice == no_data_notice(60)
    assert chosen.notice.startswith("no data given: running the built-in arithmetic task on 60 generated items")
    examples = chosen.split.train + chosen.split.val
    assert {e.meta["digits"] for e in examples} == {1, 2, 3, 4, 5}  # the paper's 1-5 digits
    assert {e.meta["operation"] for e in examples} == {"addition", "subtraction", "multiplication", "division"}
    assert all(e.source.startswith("generated:") for e in examples)  # never BIG-bench's own examples
    assert all("last_digit_shortcut" in e.meta for e in examples)
    assert not {e.instruction for e in chosen.split.train} & {e.instruction for e in chosen.split.val}
    bundled = choose_examples(DataRequest(train_size=4, val_size=4), bundled_model=True)
    assert bundled.notice == "" and bundled.task == ""


def test_headline_command_offline_from_the_hub_cache(tmp_path: Path) -> None:
    snapshot = hub_cache(tmp_path / "hf")
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_"))}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TRITON_INTERPRET="1")
    skn = shutil.which("skn", path=str(Path(sys.executable).parent))
    command = [skn] if skn else [sys.executable, "-m", "skn.cli.main"]
    done = subprocess.run(
        [*command, "probe", "--model", HUB_ID, "--metric", "loss",
         "--steps", "2", "--train-size", "16", "--val-size", "12", "--threads", "1", "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "no data given: running the built-in arithmetic task on 28 generated items" in done.stderr
    info = json.loads((out / "run.json").read_text())
    assert info["model"] == HUB_ID and info["metric"] == "loss" and info["task"] == "arithmetic"
    assert info["probe_config"]["template"] == "chat"  # the chat template of the cached tokenizer was used
    assert (out / "stats.safetensors").is_file() and (out / "neurons.json").is_file()
    assert snapshot.is_dir()
