"""A notebook is a first-class place to work (#34): progress shown by default where a person watches, a short
repr and an HTML table for a ProbeResult, a DataFrame of its neurons, `skn.wrap_loaded`; and any neuron on any
text (`skn.neuron_activations`, `skn activations`)."""

from __future__ import annotations

import inspect
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

import skn
from skn.engine.activations import parse_neurons, rank_of, run_activations
from skn.engine.api import encode
from skn.errors import UsageError
from skn.inputs.layout import Template
from skn.engine.progress import AutoProgress, RichProgress, SilentProgress, choose_progress
from skn.training.prompt import init_prompt
from skn.ranking.rank import rank_neurons
from skn.files.rundir import read_prompt

from helpers import char_tokenizer, examples, hooked_activations, run_main, tiny_loaded, tiny_model, write_data

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------- progress by default


def test_the_chooser_shows_a_bar_in_a_terminal_or_a_notebook_and_nothing_elsewhere() -> None:
    assert isinstance(choose_progress(terminal=True, notebook=False), RichProgress)
    assert isinstance(choose_progress(terminal=False, notebook=True), RichProgress)
    assert isinstance(choose_progress(terminal=False, notebook=False), SilentProgress)


def test_run_probe_defaults_to_auto_progress_which_is_silent_under_pytest() -> None:
    for function in (skn.run_probe, skn.run_train):
        assert isinstance(inspect.signature(function).parameters["progress"].default, AutoProgress)
    assert isinstance(AutoProgress().resolve(), SilentProgress)  # pytest captures stderr: not a TTY, no IPython


def test_auto_progress_sees_jupyter_and_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    shell = types.ModuleType("IPython")
    shell.get_ipython = lambda: object()  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "IPython", shell)
    assert isinstance(AutoProgress().resolve(), RichProgress)
    shell.get_ipython = lambda: None  # type: ignore[attr-defined]  # IPython imported, but no shell running
    assert isinstance(AutoProgress().resolve(), SilentProgress)
    monkeypatch.setattr(sys, "stderr", types.SimpleNamespace(isatty=lambda: True, write=sys.stderr.write))
    assert isinstance(AutoProgress().resolve(), RichProgress)


# ---------------------------------------------------------------- a finished tiny run, as a notebook makes it


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, skn.ProbeResult]:
    """A whole run_probe on a saved tiny model (about 2 s): (run directory, model folder, result)."""
    root = tmp_path_factory.mktemp("notebook")
    folder = root / "tiny-qwen2"
    tiny_model("qwen2").save_pretrained(folder)
    char_tokenizer().save_pretrained(folder)
    train, val = write_data(root / "train.jsonl", 16, 0), write_data(root / "val.jsonl", 14, 1)
    request = skn.ProbeRequest(model=skn.ModelRequest(str(folder)),
                               data=skn.DataRequest(data=(str(train),), val_data=(str(val),)), metric="size",
                               train=skn.TrainRequest(steps=3, eval_every=3, prompt_len=4, batch_size=8),
                               probe=skn.ProbeConfig(top_k=5), out=str(root / "RUN"))
    torch.set_num_threads(1)
    return root / "RUN", folder, skn.run_probe(request)  # no progress argument: the notebook's call


def test_run_probe_shows_progress_where_stderr_is_a_terminal(tiny_run: tuple[Path, Path, skn.ProbeResult],
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    run_dir, folder, _ = tiny_run
    monkeypatch.setattr("skn.engine.progress.stderr_is_terminal", lambda: True)
    request = skn.ProbeRequest(model=skn.ModelRequest(str(folder)), data=skn.DataRequest(val_data=(str(run_dir.parent / "val.jsonl"),)),
                               metric="size", prompt=str(run_dir), probe=skn.ProbeConfig(top_k=5),
                               out=str(run_dir.parent / "AGAIN"))
    skn.run_probe(request)
    assert "probing" in capsys.readouterr().err


def test_repr_is_short_and_says_what_matters(tiny_run: tuple[Path, Path, skn.ProbeResult]) -> None:
    _, folder, result = tiny_run
    text = repr(result)
    assert len(text) < 600, text
    top = result.neurons[0]
    for part in (str(folder.name), "'size'", "N=14", "2 layers x 4 positions x 48 neurons", f"{top.layer}.{top.index}@{top.position}",
                 f"{top.r:+.3f}", result.info.run_id[:12]):
        assert part in text, (part, text)
    assert ("null |r| >" in text and "pass" in text) if result.null is not None else "null off" in text
    assert repr(skn.read_probe_run(tiny_run[0])) == text  # the same summary for a run read back


def test_html_repr_is_a_table_of_the_top_neurons_with_their_exemplar_texts(tiny_run: tuple[Path, Path, skn.ProbeResult]) -> None:
    result = tiny_run[2]
    page = result._repr_html_()
    assert page.startswith("<table") and page.count("<tr>") == 1 + len(result.neurons)
    best = int(torch.argmax(result.top_activations[0]))
    assert result.examples[best].instruction in page


def test_to_frame_has_the_neurons_and_exemplar_texts(tiny_run: tuple[Path, Path, skn.ProbeResult]) -> None:
    pytest.importorskip("pandas")
    result = tiny_run[2]
    frame = result.to_frame(exemplars=3)
    assert list(frame.columns) == ["rank", "layer", "neuron", "position", "r", "p", "significant", "r_held_out", "most", "least"]
    assert frame["rank"].tolist() == [n.rank for n in result.neurons]
    assert frame["neuron"].tolist() == [n.index for n in result.neurons]
    chosen = result.exemplars(3)[0]
    assert frame["most"][0] == [result.examples[i].instruction for i in chosen.most]
    assert frame["least"][0] == [result.examples[i].instruction for i in chosen.least]
    assert all(isinstance(t, str) for t in frame["most"][0])


def test_to_frame_without_pandas_says_how_to_install_it(tiny_run: tuple[Path, Path, skn.ProbeResult],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas raises ImportError
    with pytest.raises(UsageError, match=r"pip install 'skn\[notebook\]'"):
        tiny_run[2].to_frame()


# ---------------------------------------------------------------- a model already in memory


def test_wrap_loaded_is_exported_and_takes_the_device_from_the_weights() -> None:
    assert "wrap_loaded" in skn.__all__
    loaded = skn.wrap_loaded("mine", tiny_model("qwen2"), char_tokenizer())
    assert loaded.device == torch.device("cpu") and loaded.sites.num_layers == 2 and loaded.name == "mine"
    assert skn.wrap_loaded("mine", tiny_model("qwen2"), char_tokenizer(), "cpu").device == torch.device("cpu")


# ---------------------------------------------------------------- any neuron, on any text


def test_neuron_activations_equal_a_plain_forward_hook_for_a_neuron_outside_the_top_k() -> None:
    loaded = tiny_loaded("llama")
    prompt = init_prompt(loaded, 3, seed=0)
    items = examples(9, seed=2)
    neurons = [(0, 3, 1), (2, 39, 2), (1, 0, 0)]
    got = skn.neuron_activations(loaded, prompt, items, neurons, batch_size=4)
    rows = encode(loaded, items, Template.PLAIN, 3)
    want = hooked_activations(loaded, prompt, list(rows), with_completion=False)  # [N, L, P, m]
    assert got.shape == (3, 9)
    for k, (layer, index, position) in enumerate(neurons):
        np.testing.assert_allclose(got[k].double().numpy(), want[:, layer, position, index], atol=1e-6, rtol=0)
    one = skn.neuron_activations(loaded, prompt, items[0].instruction, [(2, 39, 2)])  # a text alone is one item
    assert one.shape == (1, 1) and abs(float(one[0, 0]) - want[0, 2, 2, 39]) < 1e-6


def test_a_neuron_without_a_position_takes_its_best_one_on_the_run(tiny_run: tuple[Path, Path, skn.ProbeResult]) -> None:
    run_dir, folder, result = tiny_run
    loaded = skn.load_model(str(folder), device="cpu")
    layers, _, width = result.corr.shape
    top = {(n.layer, n.index) for n in result.neurons}
    outside = next((layer, index) for layer in range(layers) for index in range(width) if (layer, index) not in top)
    prompt = read_prompt(run_dir).prompt
    found = run_activations(loaded, run_dir, f"{outside[0]}.{outside[1]}")
    neuron = found.neurons[0]
    best = rank_neurons(result.ranked_corr, layers * width, result.info.reduce)
    assert next(n for n in best if (n.layer, n.index) == outside) == neuron  # same position, r and rank as a full ranking
    rows = encode(loaded, result.examples, Template.AUTO, int(prompt.shape[0]))
    want = hooked_activations(loaded, prompt, list(rows), with_completion=False)[:, neuron.layer, neuron.position, neuron.index]
    np.testing.assert_allclose(found.values[0].double().numpy(), want, atol=1e-6, rtol=0)
    # a top neuron on the run's items: the stored activations, no model needed
    first = result.neurons[0]
    stored = run_activations(None, run_dir, f"{first.layer}.{first.index}")
    assert torch.equal(stored.values[0], result.top_activations[0])
    with pytest.raises(UsageError, match="a model is needed"):
        run_activations(None, run_dir, f"{outside[0]}.{outside[1]}")


def test_rank_of_agrees_with_the_full_ranking() -> None:
    corr = torch.randn(3, 2, 7)
    corr[1, :, 4] = float("nan")
    corr[0, 1, 2] = corr[2, 0, 5] = 0.99  # a tie: layer order breaks it
    for n in rank_neurons(corr, 21):
        assert rank_of(corr, n.layer, n.index, skn.Reduce.ABS) == n.rank


def test_bad_neuron_names_are_one_clear_line() -> None:
    assert [r.text for r in parse_neurons("0.5, 1.7@3")] == ["0.5", "1.7@3"]
    for bad in ("0", "a.b", "1.2@", "", "1.2@x"):
        with pytest.raises(UsageError, match="--neuron"):
            parse_neurons(bad)
    loaded = tiny_loaded("qwen2")
    prompt = init_prompt(loaded, 3, seed=0)
    with pytest.raises(UsageError, match="outside the model's 2 layers x 48 neurons"):
        skn.neuron_activations(loaded, prompt, ["hi"], [(2, 0, 0)])
    with pytest.raises(UsageError, match="position 3 is outside"):
        skn.neuron_activations(loaded, prompt, ["hi"], [(0, 0, 3)])
    with pytest.raises(UsageError, match="has no position"):
        skn.neuron_activations(loaded, prompt, ["hi"], [(0, 0)])


def test_skn_activations_prints_and_writes_them(tiny_run: tuple[Path, Path, skn.ProbeResult], tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    run_dir, folder, result = tiny_run
    top = {(n.layer, n.index) for n in result.neurons}
    outside = next((0, index) for index in range(48) if (0, index) not in top)
    name = f"{outside[0]}.{outside[1]}@2"
    out = tmp_path / "acts.json"
    code, text = run_main(["activations", str(run_dir), "--neuron", f"{name},1.3", "--text", "the cat is", "--text", "a dog",
                           "--json", str(out), "--model", str(folder)], capsys)
    assert code == 0, text
    assert "the cat is" in text and name in text and "wrote" in text
    record = json.loads(out.read_text())
    loaded = skn.load_model(str(folder), device="cpu")
    prompt = read_prompt(run_dir).prompt
    want = skn.neuron_activations(loaded, prompt, ["the cat is", "a dog"], [(0, outside[1], 2)], run=result)
    assert [n["position"] for n in record["neurons"]][0] == 2 and record["run_id"] == result.info.run_id
    np.testing.assert_allclose(record["neurons"][0]["activations"], want[0].double().numpy(), atol=1e-6)
    assert [e["instruction"] for e in record["examples"]] == ["the cat is", "a dog"]

    capsys.readouterr()  # what loading the model above printed
    code, text = run_main(["activations", str(run_dir), "--neuron", name, "--json", "-", "--exemplars", "2"], capsys)
    assert code == 0, text  # run.json's model (a local folder) is loaded
    printed = json.loads(text)
    assert len(printed["neurons"][0]["activations"]) == 14 and printed["items"] == "run"

    code, text = run_main(["activations", str(run_dir), "--neuron", name, "--exemplars", "2"], capsys)
    assert code == 0 and f"neuron {name}" in text and "most" in text and "least" in text

    more = write_data(tmp_path / "more.jsonl", 4, 7)
    code, text = run_main(["activations", str(run_dir), "--neuron", name, "--data", str(more), "--json", "-"], capsys)
    assert code == 0, text
    on_file = json.loads(text)
    assert on_file["items"] == "given" and [e["source"] for e in on_file["examples"]][0].endswith("more.jsonl:1")

    code, text = run_main(["activations", str(run_dir), "--neuron", "9.1"], capsys)
    assert code == 2 and "outside the model's 2 layers" in text
    code, text = run_main(["activations", str(run_dir), "--neuron", "0.1", "--text", "x", "--data", "f.jsonl"], capsys)
    assert code == 2 and "--text and --data" in text


def test_skn_plot_draws_a_neuron_outside_the_top_k(tiny_run: tuple[Path, Path, skn.ProbeResult], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """`skn plot RUN --neuron L.I` for any neuron: one prompt-only pass of the run's model (run.json names it),
    its densities drawn from the same values `skn activations` gives."""
    run_dir, _, result = tiny_run
    top = {(n.layer, n.index) for n in result.neurons}
    outside = next((1, index) for index in range(48) if (1, index) not in top)
    code, text = run_main(["plot", str(run_dir), "--neuron", f"{outside[0]}.{outside[1]}", "--out", str(tmp_path / "p")], capsys)
    assert code == 0, text
    drawn = [p.name for p in (tmp_path / "p").iterdir() if p.name.startswith("neuron_")]
    assert drawn and all(f"_L{outside[0]}_N{outside[1]}" in name for name in drawn), drawn


def test_skn_show_prints_any_neurons_exemplars(tiny_run: tuple[Path, Path, skn.ProbeResult],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """`skn show RUN --neuron L.I`: its r, its rank among all neurons and its exemplars, top neuron or not."""
    run_dir, _, result = tiny_run
    top = {(n.layer, n.index) for n in result.neurons}
    outside = next((0, index) for index in range(48) if (0, index) not in top)
    first = result.neurons[0]
    code, text = run_main(["show", str(run_dir), "--neuron", f"{outside[0]}.{outside[1]},{first.layer}.{first.index}",
                           "--exemplars", "2"], capsys)
    assert code == 0, text
    assert f"neuron {outside[0]}.{outside[1]} at position" in text and f"neuron {first.layer}.{first.index}" in text
    assert "rank 1 of" in text  # the top neuron, named, keeps its rank
    assert "most and least activating" in text and "the " in text  # the items' text ("the cat is", ...)
