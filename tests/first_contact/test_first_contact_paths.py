"""First contact (issue #34, items 2 and 8): run paths, hub conventions, offline.

A local model is recorded resolved, so a run is used from any folder; a prompt is recognised by the weights it
was trained on (a fingerprint), not by the path string; `--revision` reaches every from_pretrained and run.json;
`hf:NAME:CONFIG:SPLIT` names a dataset configuration; third-party progress bars stay hidden; and a hub model
that is neither cached nor reachable fails in seconds with one line.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open

import skn.models.hub
from helpers import STORIES, one_error, run_main, save_model, tiny_model, write_data
from skn.views.console import quiet_transformers
from skn.inputs.data import HfDataset, load_examples, parse_hf_spec
from skn.errors import DataError
from skn.models.fingerprint import FINGERPRINT_KEY, model_fingerprint
from skn.engine.preflight import check_prompt_model, same_model

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = ["--steps", "2", "--eval-every", "2", "--prompt-len", "2", "--batch-size", "8", "--top-k", "3", "--threads", "1"]
SMOL = STORIES.parent / "smollm2-135m-instruct"
FAKE_HUB_ID = "skn-tests/no-such-model-anywhere"


def prompt_metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path / "prompt.safetensors"), framework="pt") as handle:
        return dict(handle.metadata() or {})


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return write_data(tmp_path / "data.jsonl", 30, 0)


@pytest.fixture
def no_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hub cannot be reached (whatever this machine's network), its offline mode off."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(skn.models.hub, "hub_reachable", lambda timeout=skn.models.hub.REACH_TIMEOUT_S: False)


# ---------------------------------------------------------------- 1. a run is used from any folder


def test_a_local_model_is_recorded_resolved_and_the_run_ablates_from_another_folder(
        tmp_path: Path, saved_tiny_model: Path, data: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out = run_main(["probe", "--model", "./tiny-qwen2", "--data", str(data), "--out", "R", "--metric", "loss",
                          *FAST], capsys)
    assert code == 0, out
    info = json.loads((tmp_path / "R" / "run.json").read_text())
    assert info["model"] == str(saved_tiny_model.resolve())  # not "./tiny-qwen2"
    assert prompt_metadata(tmp_path / "R")["model"] == str(saved_tiny_model.resolve())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, out = run_main(["ablate", str(tmp_path / "R"), "--controls", "2", "--per-neuron", "1", "--items", "4"], capsys)
    assert code == 0, out
    assert (tmp_path / "R" / "ablation.json").is_file()


def test_an_old_run_whose_relative_model_does_not_resolve_names_run_json(
        tmp_path: Path, saved_tiny_model: Path, data: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    code, out = run_main(["probe", "--model", str(saved_tiny_model), "--data", str(data), "--out", str(tmp_path / "R"),
                          "--metric", "loss", *FAST], capsys)
    assert code == 0, out
    run_json = tmp_path / "R" / "run.json"
    info = json.loads(run_json.read_text())
    info["model"] = "../shared/models/tiny-qwen2"  # as an older skn wrote what was typed
    run_json.write_text(json.dumps(info))
    monkeypatch.chdir(tmp_path / "R")
    code, out = run_main(["ablate", str(tmp_path / "R"), "--controls", "2"], capsys)
    line = one_error(out, code, 2, str(run_json), "model '../shared/models/tiny-qwen2'", "--model PATH")
    assert "--model ../shared" not in line  # never as a flag the user did not pass


def test_a_hub_id_is_recorded_as_given(tmp_path: Path) -> None:
    assert skn.models.hub.recorded_name(FAKE_HUB_ID) == FAKE_HUB_ID
    (tmp_path / "models").mkdir()  # a local folder, whether or not ../shared is here
    assert skn.models.hub.recorded_name(str(tmp_path / "models" / ".." / "models")) == str((tmp_path / "models").resolve())


# ---------------------------------------------------------------- 2. a prompt is recognised by its weights


def test_a_prompt_from_a_copied_model_folder_is_accepted_and_other_weights_refused(
        tmp_path: Path, saved_tiny_model: Path, data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run_main(["train", "--model", str(saved_tiny_model), "--data", str(data), "--out", str(tmp_path / "P"),
                          *FAST[:6]], capsys)
    assert code == 0, out
    fingerprint = prompt_metadata(tmp_path / "P")[FINGERPRINT_KEY]
    copy = shutil.copytree(saved_tiny_model, tmp_path / "moved" / "copy-of-tiny")
    code, out = run_main(["probe", "--model", str(copy), "--prompt", str(tmp_path / "P"), "--data", str(data),
                          "--out", str(tmp_path / "R"), "--metric", "loss", *FAST], capsys)
    assert code == 0, out  # refused by path string before the fingerprint
    assert json.loads((tmp_path / "R" / "run.json").read_text())[FINGERPRINT_KEY] == fingerprint
    other = save_model(tiny_model("qwen2", seed=1), tmp_path / "other-weights")
    code, out = run_main(["probe", "--model", str(other), "--prompt", str(tmp_path / "P"), "--data", str(data),
                          "--out", str(tmp_path / "R2"), "--metric", "loss", *FAST], capsys)
    one_error(out, code, 2, "--prompt", "fingerprints differ", "--any-prompt-model")


def test_the_fingerprint_is_that_of_the_weights_not_of_the_dtype_or_the_path() -> None:
    model = tiny_model("llama")
    fingerprint = model_fingerprint(model)
    assert len(fingerprint) == 64
    assert model_fingerprint(tiny_model("llama")) == fingerprint  # the same weights, built again
    assert model_fingerprint(tiny_model("llama").to(torch.bfloat16)) == fingerprint  # loaded in bfloat16
    assert model_fingerprint(tiny_model("llama", seed=1)) != fingerprint
    with torch.no_grad():
        changed = tiny_model("llama")
        changed.model.layers[2].mlp.down_proj.weight[0, 0] += 0.5  # one weight of the last layer
    assert model_fingerprint(changed) != fingerprint


def test_names_decide_where_a_fingerprint_is_missing(tmp_path: Path) -> None:
    assert same_model("a/b", "x/y", "f" * 64, "f" * 64)  # the same weights under two names
    assert not same_model("a/b", "x/y", "f" * 64, "e" * 64)
    assert not same_model("a/b", "x/y", "", "")  # an older prompt file: by name
    assert same_model(str(tmp_path), str(tmp_path / "." / ""), "", "e" * 64)
    check_prompt_model("", "x/y", "P", False)  # a prompt that names no model
    with pytest.raises(Exception, match="trained on model 'a/b'"):
        check_prompt_model("a/b", "x/y", "P", False, "", "e" * 64)


# ---------------------------------------------------------------- 3. --revision, hf:NAME:CONFIG:SPLIT


def test_revision_reaches_config_tokenizer_and_model_and_run_json(
        tmp_path: Path, saved_tiny_model: Path, data: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A hub id stands for the saved tiny model: every from_pretrained is recorded and sent to the folder."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    seen: list[tuple[str, object]] = []
    monkeypatch.setattr(skn.models.hub, "in_hub_cache", lambda name, revision="": True)
    monkeypatch.setattr(skn.models.hub, "hub_reachable", lambda timeout=skn.models.hub.REACH_TIMEOUT_S: True)
    for cls in (AutoConfig, AutoTokenizer, AutoModelForCausalLM):
        original = cls.from_pretrained.__func__  # type: ignore[attr-defined]

        def redirected(klass: Any, name: str, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            seen.append((klass.__name__, kwargs.get("revision")))
            return _original(klass, str(saved_tiny_model) if name == FAKE_HUB_ID else name, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(redirected))
    code, out = run_main(["probe", "--model", FAKE_HUB_ID, "--revision", "v1.0", "--data", str(data),
                          "--out", str(tmp_path / "R"), "--metric", "loss", *FAST], capsys)
    assert code == 0, out
    assert {what for what, _ in seen} >= {"AutoConfig", "AutoTokenizer", "AutoModelForCausalLM"}
    assert {revision for _, revision in seen} == {"v1.0"}, seen  # the memory plan's reads included
    info = json.loads((tmp_path / "R" / "run.json").read_text())
    assert info["model"] == FAKE_HUB_ID and info["revision"] == "v1.0"


def test_revision_of_a_local_folder_is_refused(saved_tiny_model: Path, data: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run_main(["probe", "--model", str(saved_tiny_model), "--revision", "main", "--data", str(data),
                          "--out", str(tmp_path / "R"), *FAST], capsys)
    one_error(out, code, 2, "--revision main", "local path")
    code, out = run_main(["probe", "--revision", "main", "--out", str(tmp_path / "B"), *FAST], capsys)
    one_error(out, code, 2, "--revision main", "--model ID")  # the bundled model has no revisions


def test_hf_specs_name_a_dataset_its_configuration_and_split() -> None:
    assert parse_hf_spec("hf:imdb") == HfDataset("imdb", "train")
    assert parse_hf_spec("hf:imdb:test") == HfDataset("imdb", "test")
    assert parse_hf_spec("hf:nyu-mll/glue:mnli:validation_matched") == HfDataset("nyu-mll/glue", "validation_matched", "mnli")
    assert parse_hf_spec("hf:glue:mnli:") == HfDataset("glue", "train", "mnli")
    for bad in ("hf:", "hf::test", "hf:a:b:c:d"):
        with pytest.raises(DataError, match="hf:NAME:CONFIG:SPLIT"):
            parse_hf_spec(bad)


def test_hf_name_config_split_loads_that_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, ...]] = []

    def load_dataset(name: str, config: str | None = None, split: str = "") -> list[dict[str, str]]:
        calls.append((name, config, split))
        return [{"instruction": "2+2=", "completion": " 4", "kind": "sum"}]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    examples = load_examples("hf:some/set:arith:validation")
    assert calls == [("some/set", "arith", "validation")]
    assert examples[0].completion == " 4" and examples[0].source == "hf:some/set:arith:validation#0"
    load_examples("hf:some/set:test")
    assert calls[-1] == ("some/set", None, "test")


def test_hf_without_the_datasets_package_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    with pytest.raises(DataError, match=r"pip install 'skn\[datasets\]'"):
        load_examples("hf:glue:mnli:train")


# ---------------------------------------------------------------- 4. third-party progress bars


def test_quiet_hides_the_gguf_dequantization_bar_and_hub_bars_and_restores_them(
        capfd: pytest.CaptureFixture[str]) -> None:
    import transformers.modeling_gguf_pytorch_utils as gguf_module
    from huggingface_hub import utils as hub_utils

    bar = gguf_module.tqdm
    hub_utils.enable_progress_bars()
    with quiet_transformers():
        assert hub_utils.are_progress_bars_disabled()
        for _ in gguf_module.tqdm(range(3), desc="Converting and de-quantizing GGUF tensors..."):
            pass
    assert "de-quantizing" not in capfd.readouterr().err
    assert gguf_module.tqdm is bar and not hub_utils.are_progress_bars_disabled()
    hub_utils.disable_progress_bars()  # a caller's own setting is kept too
    with quiet_transformers():
        pass
    assert hub_utils.are_progress_bars_disabled()
    hub_utils.enable_progress_bars()


@pytest.mark.slow
def test_loading_a_gguf_model_shows_no_progress_bar(capfd: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("gguf")
    if not any(SMOL.glob("*.gguf")):
        pytest.skip(f"{SMOL} is absent")
    from skn.engine.request import ModelRequest
    from skn.engine.run import load_requested_model

    loaded = load_requested_model(ModelRequest(str(SMOL), device="cpu"))
    assert loaded.weights.startswith("GGUF")
    err = capfd.readouterr().err
    assert "de-quantizing" not in err and "%|" not in err, err[-2000:]


# ---------------------------------------------------------------- 5. offline


def test_an_uncached_hub_model_with_no_network_fails_in_seconds_with_one_line(
        no_hub: None, tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    start = time.perf_counter()
    code, out = run_main(["probe", "--model", FAKE_HUB_ID, "--data", str(data), "--out", str(tmp_path / "R"), *FAST],
                         capsys)
    assert time.perf_counter() - start < 5
    one_error(out, code, 2, f"--model {FAKE_HUB_ID}: not in the local Hugging Face cache and the hub cannot be "
                            "reached (offline); download it first or pass a local folder")
    assert not (tmp_path / "R").exists()


def test_the_network_check_gives_up_in_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    """A name lookup or a connection that never answers: the check returns False when its time is up."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(skn.models.hub, "_answers", lambda url, timeout, answer: time.sleep(30))
    start = time.perf_counter()
    assert not skn.models.hub.hub_reachable(timeout=0.5)
    assert time.perf_counter() - start < 2
    monkeypatch.setattr(skn.models.hub, "_answers", lambda url, timeout, answer: answer.append(True))
    assert skn.models.hub.hub_reachable(timeout=0.5)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # the hub's own offline mode: not even asked
    assert not skn.models.hub.hub_reachable(timeout=0.5)


def test_the_network_check_of_this_machine_is_quick() -> None:
    start = time.perf_counter()
    skn.models.hub.hub_reachable()  # whatever the answer here, it comes within the timeout
    assert time.perf_counter() - start < skn.models.hub.REACH_TIMEOUT_S + 1


def test_a_cached_hub_model_loads_offline_when_the_hub_cannot_be_reached(
        no_hub: None, tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """No retries: every from_pretrained runs with the hub's offline mode on, which is off again after."""
    from huggingface_hub import constants
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    hub_id = "skn-tests/tiny-qwen2"
    repo = tmp_path / "hub" / ("models--" + hub_id.replace("/", "--"))
    save_model(tiny_model("qwen2"), repo / "snapshots" / ("0" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    offline: list[bool] = []
    for cls in (AutoConfig, AutoTokenizer, AutoModelForCausalLM):
        original = cls.from_pretrained.__func__  # type: ignore[attr-defined]

        def spied(klass: Any, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            offline.append(bool(constants.HF_HUB_OFFLINE))
            return _original(klass, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(spied))
    code, out = run_main(["probe", "--model", hub_id, "--data", str(data), "--out", str(tmp_path / "R"),
                          "--metric", "loss", *FAST], capsys)
    assert code == 0, out
    assert offline and all(offline), offline
    assert constants.HF_HUB_OFFLINE is False
    assert json.loads((tmp_path / "R" / "run.json").read_text())["model"] == hub_id


def test_hf_hub_offline_and_an_uncached_id_is_one_line_in_a_fresh_process(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_"))}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1", TRITON_INTERPRET="1")
    done = subprocess.run([sys.executable, "-m", "skn", "probe", "--model", FAKE_HUB_ID, "--threads", "1",
                           "--out", str(tmp_path / "R")], env=env, capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    output = done.stdout + done.stderr
    one_error(output, done.returncode, 2, "not in the local Hugging Face cache and the hub cannot be reached")
    assert "Retrying" not in output
