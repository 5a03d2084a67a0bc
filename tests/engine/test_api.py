"""The notebook path of docs/python-api.md: the top-level `skn` API on a model folder and JSONL files."""

from __future__ import annotations

from pathlib import Path

import skn

from helpers import write_data


def test_readme_python_flow(tmp_path: Path, saved_tiny_model: Path) -> None:
    loaded = skn.load_model(str(saved_tiny_model), device="cpu")
    train_set = skn.load_examples(write_data(tmp_path / "train.jsonl", 16, 0))
    val_set = skn.load_examples(write_data(tmp_path / "val.jsonl", 12, 1))
    trained = skn.train(loaded, train_set, val_set, skn.TrainConfig(prompt_len=3, steps=2, eval_every=1), out=tmp_path / "RUN")
    result = skn.probe(loaded, trained.prompt, val_set, "size", skn.ProbeConfig(top_k=4))
    assert [n.rank for n in result.neurons] == [1, 2, 3, 4]
    assert tuple(result.top_activations.shape) == (4, 12)
    assert (tmp_path / "RUN" / "prompt.safetensors").is_file()
    assert result.metric.tolist() == [float(e.meta["size"]) for e in val_set]  # type: ignore[arg-type]
