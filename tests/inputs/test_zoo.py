"""The bundled model (skn.zoo): loads offline, matches its checksums, and its training script runs."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from skn.inputs.data import Example
from skn.errors import ModelError
from skn.zoo import PLACEHOLDER, default_examples, default_model_path, verify_model
from skn.zoo import multiple_choice as mc
from skn.zoo import shortcut_target
from skn.zoo import train_arithmetic as train
from skn.zoo.evaluate import auroc, top_neuron
from helpers import reference_token_nll

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
BIGBENCH = SHARED / "data" / "bigbench_arithmetic"


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def _load(folder: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(str(folder)), AutoTokenizer.from_pretrained(str(folder))


def test_bundled_model_matches_checksums_and_size() -> None:
    folder = verify_model()
    assert folder == default_model_path()
    listed = [line.split("  ", 1)[1] for line in (folder / "SHA256SUMS").read_text().splitlines() if line]
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(listed)
    assert sum(p.stat().st_size for p in folder.iterdir()) <= 20 * 1024 * 1024


def test_a_changed_file_fails_the_checksum(tmp_path: Path) -> None:
    copy = tmp_path / "model"
    shutil.copytree(default_model_path(), copy)
    config = json.loads((copy / "config.json").read_text())
    config["rms_norm_eps"] = 1e-6
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="config.json"):
        verify_model(copy)
    shutil.copy2(default_model_path() / "config.json", copy / "config.json")
    verify_model(copy)
    (copy / "tokenizer.json").unlink()
    with pytest.raises(ModelError, match="tokenizer.json is missing"):
        verify_model(copy)


def test_bundled_model_loads_offline_with_its_layout_tokens() -> None:
    model, tokenizer = _load(default_model_path())
    assert model.config.model_type == "llama"
    text = "Question: What is 12 times 34?\nChoices: 408, banana\nAnswer:"
    ids = tokenizer(text)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id
    assert len(ids) == len(text) + 1  # one token per character, plus BOS
    assert tokenizer.decode(ids[1:]) == text
    chars = [tokenizer.convert_tokens_to_ids(c) for c in " 408"]
    assert tokenizer(" 408", add_special_tokens=False)["input_ids"] == chars
    soft = tokenizer.convert_tokens_to_ids(PLACEHOLDER)
    assert soft not in (tokenizer.unk_token_id, tokenizer.pad_token_id, tokenizer.eos_token_id)
    assert isinstance(tokenizer.eos_token_id, int)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids + [soft] * 20])).logits
    assert logits.shape == (1, len(ids) + 20, model.config.vocab_size) and torch.isfinite(logits).all()


@pytest.mark.slow  # over 8 s in `pytest --durations=15` (2 shared cores)
def test_bundled_model_beats_chance_on_generated_items() -> None:
    """Not a figure to report (bench/README.md has those), a guard against shipping untrained weights."""
    model, tokenizer = _load(default_model_path())
    torch.set_num_threads(1)
    report = mc.evaluate(model, tokenizer, default_examples(0, 60).val, prompt_len=20)
    assert report.accuracy > 2 / 7  # 7 choices; chance is 1/7


def test_default_examples_are_seeded_generated_multiple_choice() -> None:
    split = default_examples(10, 7)
    assert (len(split.train), len(split.val)) == (10, 7)
    assert split == default_examples(10, 7)
    assert not {e.instruction for e in split.train} & {e.instruction for e in split.val}
    for example in split.train + split.val:
        assert example.instruction.startswith("Question: What is ") and example.instruction.endswith("\nAnswer:")
        assert example.completion.strip() in mc.parse_choices(example.instruction)
        assert example.meta["operation"] == "multiplication" and example.meta["digits"] in (2, 3)
        assert isinstance(example.meta["last_digit_shortcut"], bool)


def _tiny_config(**changes: object) -> train.PretrainConfig:
    base: dict[str, Any] = dict(steps=3, pool=6, val_items=2, eval_every=3, checkpoint_every=3, warmup=1, batch_size=4,
                hidden=32, intermediate=64, layers=2, heads=2)
    base.update(changes)
    return train.PretrainConfig(**base)


def test_training_script_smoke_run_is_bit_for_bit_repeatable(tmp_path: Path) -> None:
    cfg = _tiny_config()
    history = train.pretrain(cfg, tmp_path / "a", tmp_path / "ckpt", resume=False, log=False)
    train.pretrain(cfg, tmp_path / "b", None, resume=False, log=False)
    assert [row["step"] for row in history.rows] == [3]
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    verify_model(tmp_path / "a")
    model, tokenizer = _load(tmp_path / "a")
    assert tokenizer.convert_tokens_to_ids(PLACEHOLDER) == train.SPECIAL_TOKENS.index(PLACEHOLDER)
    assert (tmp_path / "ckpt" / "state.json").exists()


def test_a_kill_while_checkpointing_leaves_the_previous_step_and_resumes_bit_for_bit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kill after the step's tensors are written but before state.json names them: the checkpoint is the
    previous step's, complete, and resuming from it gives the uninterrupted run's weights exactly."""
    from skn.zoo import pretrain_checkpoint

    cfg = _tiny_config(steps=4, eval_every=2, checkpoint_every=2)
    train.pretrain(cfg, tmp_path / "whole", None, resume=False, log=False)
    real_write_json = pretrain_checkpoint.write_json

    def killed_at_step_4(path: Path, value: Any) -> None:
        if value["step"] == 4:
            raise KeyboardInterrupt("killed")
        real_write_json(path, value)

    monkeypatch.setattr(pretrain_checkpoint, "write_json", killed_at_step_4)
    with pytest.raises(KeyboardInterrupt):
        train.pretrain(cfg, tmp_path / "killed", tmp_path / "ckpt", resume=False, log=False)
    assert json.loads((tmp_path / "ckpt" / "state.json").read_text())["step"] == 2
    assert (tmp_path / "ckpt" / "weights-4.safetensors").exists()  # written, not yet named: ignored
    monkeypatch.setattr(pretrain_checkpoint, "write_json", real_write_json)
    train.pretrain(cfg, tmp_path / "resumed", tmp_path / "ckpt", resume=True, log=False)
    assert (tmp_path / "resumed" / "model.safetensors").read_bytes() == (tmp_path / "whole" / "model.safetensors").read_bytes()
    assert sorted(f.name for f in (tmp_path / "ckpt").iterdir()) == ["optimizer-4.safetensors", "state.json", "weights-4.safetensors"]


def test_the_script_runs_from_the_command_line(tmp_path: Path) -> None:
    train.main(["--out", str(tmp_path / "m"), "--steps", "2", "--pool", "4", "--val-items", "1"])
    assert json.loads((tmp_path / "m" / "training.json").read_text())["train_config"]["steps"] == 2


def test_the_auxiliary_target_sits_at_every_slot_but_the_last(tmp_path: Path) -> None:
    """--auxiliary shortcut: "Y"/"N" from slots 0..P-2 of each row (slot P-1 predicts the completion's first
    token, which keeps its own target), and a fine-tuning run from a saved model records its choices."""
    starts = torch.tensor([2, 5])
    out = shortcut_target.aux_targets(starts, 30, [True, False], 4, (70, 71))
    assert out[0].tolist() == [-100, -100, 71, 71, 71, *([-100] * 25)]
    assert out[1].tolist() == [*([-100] * 5), 70, 70, 70, *([-100] * 22)]
    base = _tiny_config()
    train.pretrain(base, tmp_path / "base", None, resume=False, log=False)
    tuned = _tiny_config(auxiliary=shortcut_target.Auxiliary.SHORTCUT, init_from=str(tmp_path / "base"), steps=2, eval_every=2,
                         checkpoint_every=2)
    history = train.pretrain(tuned, tmp_path / "tuned", None, resume=False, log=False)
    assert 0.0 <= float(history.rows[-1]["aux_accuracy"]) <= 1.0  # type: ignore[arg-type]
    record = json.loads((tmp_path / "tuned" / "training.json").read_text())["train_config"]
    assert record["auxiliary"] == "shortcut" and record["init_from"] == str(tmp_path / "base")
    with pytest.raises(ModelError, match="not this architecture"):
        train.pretrain(_tiny_config(init_from=str(tmp_path / "base"), hidden=64), tmp_path / "x", None, resume=False, log=False)


def test_choice_scores_equal_a_plain_forward() -> None:
    """Summed NLL of each choice against an independent float64 computation on the raw sequence."""
    torch.manual_seed(0)
    tokenizer = train.build_tokenizer()
    model = train.build_model(_tiny_config(), len(train.SPECIAL_TOKENS) + len(train.CHARACTERS)).eval()
    example = Example("Question: What is 7 times 8?\nChoices: 56, 1, banana\nAnswer:", " 56", {"last_digit_shortcut": True}, "t")
    scored = mc.score_choices(model, tokenizer, [example], prompt_len=3)[0]
    assert scored.correct == 0 and scored.shortcut
    soft = train.SPECIAL_TOKENS.index(PLACEHOLDER)
    for choice, got in zip(("56", "1", "banana"), scored.nll):
        prefix = tokenizer(example.instruction)["input_ids"] + [soft] * 3
        tail = tokenizer(" " + choice, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([prefix + tail])).logits[0].double()
        logp = torch.log_softmax(logits, dim=-1)
        want = -sum(float(logp[len(prefix) + i - 1, t]) for i, t in enumerate(tail))
        assert got == pytest.approx(want, abs=1e-4)


def test_a_float64_model_is_scored_in_float64() -> None:
    """token_nll kept float32 even for a float64 model (`.float()` casts down); now the logits' wider precision."""

    class Logits(torch.nn.Module):
        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any:
            gen = torch.Generator().manual_seed(1)
            values = 1000.0 + torch.randn(*input_ids.shape, 7, generator=gen, dtype=torch.float64) * 1e-3
            return type("Out", (), {"logits": values})()

    ids = torch.zeros(1, 3, dtype=torch.long)
    targets = torch.tensor([[2, -100, 5]])
    got = mc.token_nll(Logits(), ids, torch.ones_like(ids), targets)
    logits = Logits()(ids, ids).logits[0].tolist()
    for t, target in enumerate(targets[0].tolist()):
        want = 0.0 if target == -100 else reference_token_nll(logits[t], target)
        assert abs(float(got[0, t]) - want) < 1e-12  # float32 is ~1e-5 off on logits near 1000


def test_auroc_against_pairwise_count() -> None:
    rng = np.random.default_rng(3)
    score = np.round(rng.normal(size=40), 1)  # ties on purpose
    positive = rng.random(40) < 0.4
    pairs = [(a > b) + 0.5 * (a == b) for a, b in itertools.product(score[positive], score[~positive])]
    assert auroc(score, positive) == pytest.approx(float(np.mean(pairs)), abs=1e-12)


def test_top_neuron_finds_a_planted_shortcut_neuron() -> None:
    rng = np.random.default_rng(5)
    n = 200
    shortcut = rng.random(n) < 0.6
    loss = np.where(shortcut, 0.5, 1.5) + rng.normal(scale=0.3, size=n)
    acts = rng.normal(size=(n, 2, 3, 8))
    acts[:, 1, 2, 5] = -2.0 * loss + rng.normal(scale=0.5, size=n)
    check = top_neuron(acts, loss, shortcut)
    assert (check.layer, check.position, check.index) == (1, 2, 5)
    assert check.r == pytest.approx(np.corrcoef(acts[:, 1, 2, 5], loss)[0, 1], abs=1e-12)
    assert check.auroc_shortcut > 0.85


@pytest.mark.skipif(not BIGBENCH.is_dir(), reason="../shared/data/bigbench_arithmetic is absent")
def test_real_bigbench_items_score() -> None:
    from skn.tasks.arithmetic import load_bigbench, to_example

    model, tokenizer = _load(default_model_path())
    items = load_bigbench(BIGBENCH / "1_digit_multiplication" / "task.json")[:20]
    scored = mc.score_choices(model, tokenizer, [to_example(i, 0) for i in items], prompt_len=20)
    assert len(scored) == 20 and all(len(s.nll) == len(i.choices) for s, i in zip(scored, items))


def test_training_distractors_share_the_answers_magnitude() -> None:
    """Same-length distractors of the training items keep the answer's first two digits (so magnitude
    cannot pick the answer) and draw the rest, the last digit included, at random; the shortcut flag is
    read from the choices as for any item; prefix 0 leaves the generator's items as they are."""
    import random

    from skn.tasks.arithmetic import generate_items, last_digit_shortcut

    items = generate_items("multiplication", 5, 200, seed=3)
    changed = [train.same_magnitude(item, 2, random.Random(i)) for i, item in enumerate(items)]
    lasts = set()
    for before, after in zip(items, changed):
        assert after.answer == before.answer and len(after.choices) == len(before.choices) == len(set(after.choices))
        same = [c for c in after.choices if c.isdigit() and len(c) == len(after.answer) and c != after.answer]
        assert same and all(c[:2] == after.answer[:2] for c in same)
        assert [c for c in after.choices if c not in same] == [c for c in before.choices if c not in same and
                                                               not (c.isdigit() and len(c) == len(before.answer) and c != before.answer)]
        lasts.update(c[-1] for c in same)
    assert lasts == set("0123456789")
    rate = np.mean([last_digit_shortcut(item) for item in changed])
    assert 0.55 < rate < 0.77  # four numeric distractors, each with a uniform last digit: 0.9 ** 4 = 0.66 expected
    assert train.same_magnitude(items[0], 0, random.Random(0)) == items[0]
    short = generate_items("multiplication", 1, 5, seed=3)[0]
    assert train.same_magnitude(short, 2, random.Random(0)) == short


@pytest.mark.skipif(not BIGBENCH.is_dir(), reason="../shared/data/bigbench_arithmetic is absent")
def test_check_run_scores_the_runs_own_neurons_on_real_items(tmp_path: Path) -> None:
    """`python -m skn.zoo.evaluate --run RUN`: the run's top neurons and prompt, not a new ranking, on the
    real items; each AUROC is P(no-shortcut item above a shortcut item) of activation * sign(r)."""
    from skn.files.probe_read import read_probe_run
    from skn.engine.request import DataRequest, ProbeRequest, TrainRequest
    from skn.engine.run import run_probe
    from skn.zoo.evaluate import check_run

    torch.set_num_threads(1)
    run_probe(ProbeRequest(data=DataRequest(train_size=8, val_size=12), train=TrainRequest(steps=1),
                           out=str(tmp_path / "run"), threads=1))
    record = check_run(tmp_path / "run", default_model_path(), BIGBENCH, [1], seed=0)
    run = read_probe_run(tmp_path / "run")
    assert record["neurons"] == [f"{n.layer}.{n.index}@{n.position}" for n in run.neurons]
    one = record["1_digit_multiplication"]
    assert isinstance(one, dict) and one["n"] == 100 and 0 < one["n_shortcut"] < 100
    assert len(one["auroc_top_neurons"]) == len(run.neurons)
    assert all(0.0 <= a <= 1.0 for a in one["auroc_top_neurons"]) and 0.0 <= one["auroc_loss"] <= 1.0
