"""A killed `skn ablate` keeps every forward it finished (skn.ablation.ablate_checkpoint): the rerun measures
only the rest and ends bitwise equal to an uninterrupted run; a checkpoint of other data, or of other sets,
is not reused; an unreadable one is one RunDirError; the file is gone once the result is written."""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from skn.ablation.ablate import AblationConfig, Measures, NoStore, SetStore
from skn.ablation.ablate_checkpoint import AblationCheckpoint, chunk_digest, open_checkpoint
from skn.ablation.ablate_curve import Curve, combinations, k_curves
from skn.ablation.ablate_files import CURVE_FILE
from skn.ablation.ablate_run import AblationRequest, ablate_run
from skn.ablation.intervention import Intervention, Target, Value, ValueKind, Where, build_intervention, parse_wheres
from skn.ablation.stacked_forward import AblationData, prepare
from skn.engine.api import encode
from skn.engine.progress import Advance, TaskContext
from skn.errors import RunDirError
from skn.files.rundir import ABLATION_CHECKPOINT_FILE
from skn.inputs.data import Example
from skn.inputs.layout import Template
from skn.inputs.metrics import parse_metric
from skn.training.prompt import init_prompt

from helpers import probed_tiny_run, tiny_loaded

P = 3


class Killed(Exception):
    """Stands for kill -9 between two forwards."""


def _data(loaded: object, seed: int = 0, n: int = 5) -> AblationData:
    rng = random.Random(seed)
    examples = [Example("".join(rng.choice("abcde ") for _ in range(rng.randint(1, 10))),
                        "".join(rng.choice("xyz") for _ in range(rng.randint(1, 3))), {}, f"t:{i}") for i in range(n)]
    alts = [Example(e.instruction, e.completion + "x", e.meta, e.source) for e in examples]
    prompt = init_prompt(loaded, P, seed=0)  # type: ignore[arg-type]
    return prepare(loaded, prompt, encode(loaded, examples, Template.PLAIN, P), examples, parse_metric("confidence"),  # type: ignore[arg-type]
                   encode(loaded, alts, Template.PLAIN, P), list(range(n)), True, 2)  # type: ignore[arg-type]


@dataclass
class Counting:
    """A store that counts the forwards it is handed, and dies after `die_after` of them (0: never)."""

    inner: SetStore
    die_after: int = 0
    kept: list[int] = field(default_factory=list)

    def known(self, chunk: Sequence[Intervention | None], split: bool) -> tuple[Measures, ...]:
        return self.inner.known(chunk, split)

    def keep(self, chunk: Sequence[Intervention | None], split: bool, measures: Sequence[Measures]) -> None:
        self.inner.keep(chunk, split, measures)
        self.kept.append(len(chunk))
        if len(self.kept) == self.die_after:
            raise Killed


def _curves(data: AblationData, store: SetStore) -> tuple[Curve, ...]:
    layers, width = data.loaded.sites.num_layers, data.loaded.sites.width
    mean_x = torch.randn(layers, P, width, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    ranked = [Target(l, i, (l + 2 * i) % P) for l in range(layers) for i in range(width)]
    configs = combinations(AblationConfig(n_controls=3, seed=1, share=3), (), parse_wheres("prompt,all"))
    return k_curves(data, ranked, (1, 4), mean_x, configs, range(5), store=store)


def _bitwise(a: Sequence[Curve], b: Sequence[Curve]) -> None:
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x.base.loss, y.base.loss) and x.base.metric is not None and y.base.metric is not None
        assert torch.equal(x.base.metric, y.base.metric)
        for px, py in zip(x.points, y.points, strict=True):
            sets_x = (px.comparison.ablated, *px.comparison.controls)
            sets_y = (py.comparison.ablated, *py.comparison.controls)
            assert [s.effect for s in sets_x] == [s.effect for s in sets_y]  # ==, not approx
            assert px.p_holm == py.p_holm


@pytest.mark.parametrize("split", [True, False])
def test_a_killed_curve_resumes_to_the_uninterrupted_numbers(tmp_path: Path, split: bool) -> None:
    loaded = tiny_loaded("qwen2", seed=4, init_range=0.2)
    data = _data(loaded)
    if not split:
        data = AblationData(**{**data.__dict__, "split": False})
    reference = _curves(data, NoStore())
    whole = Counting(NoStore())
    _curves(data, whole)
    forwards = len(whole.kept)
    assert forwards >= 6  # 2 places x (1 + 2 x 4 sets) in forwards of 3 (or one stack of 17 without the split)

    first = Counting(open_checkpoint(tmp_path, data), die_after=4)
    with pytest.raises(Killed):
        _curves(data, first)
    assert (tmp_path / ABLATION_CHECKPOINT_FILE).is_file()

    heard: list[str] = []
    checkpoint = open_checkpoint(tmp_path, data, heard.append)
    assert len(checkpoint.chunks) == 4 and checkpoint.sets == sum(first.kept)
    assert len(heard) == 1 and heard[0].startswith("resuming: ") and f"{checkpoint.sets} sets" in heard[0]
    second = Counting(checkpoint)
    resumed = _curves(data, second)
    assert len(second.kept) == forwards - 4  # only the forwards the killed run had not finished
    _bitwise(resumed, reference)

    # run once more: nothing is measured, the numbers are the same
    third = Counting(open_checkpoint(tmp_path, data))
    _bitwise(_curves(data, third), reference)
    assert third.kept == []


def test_a_checkpoint_of_other_items_or_other_sets_is_not_reused(tmp_path: Path) -> None:
    loaded = tiny_loaded("llama", seed=2, init_range=0.2)
    data = _data(loaded, seed=0)
    _curves(data, open_checkpoint(tmp_path, data))
    other = _data(loaded, seed=1)  # other items: another fingerprint
    heard: list[str] = []
    store = Counting(open_checkpoint(tmp_path, other, heard.append))
    _curves(other, store)
    assert len(heard) == 1 and "is replaced" in heard[0] and ABLATION_CHECKPOINT_FILE in heard[0]
    whole = Counting(NoStore())
    _curves(other, whole)
    assert store.kept == whole.kept  # every forward measured
    assert open_checkpoint(tmp_path, other).sets == sum(whole.kept)  # the file is now the new data's

    # the same data, other sets: a chunk is its sets in order, the values to the last bit
    width = loaded.sites.width
    mean_x = torch.randn(2, P, width, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    nudged = mean_x.clone()
    nudged[1, 0, 5] = torch.nextafter(nudged[1, 0, 5], torch.tensor(10.0, dtype=torch.float64))
    targets = (Target(1, 5, 0), Target(0, 3, 2))
    mean = build_intervention(targets, Value(ValueKind.MEAN), Where.PROMPT, mean_x)
    assert chunk_digest([None, mean], True) != chunk_digest([None, build_intervention(targets, Value(ValueKind.MEAN), Where.PROMPT, nudged)], True)
    assert chunk_digest([None, mean], True) != chunk_digest([mean, None], True)
    assert chunk_digest([None, mean], True) != chunk_digest([None, mean], False)
    assert chunk_digest([None, mean], True) != chunk_digest([None, build_intervention(targets, Value(ValueKind.MEAN), Where.ALL, mean_x)], True)
    assert chunk_digest([None, mean], True) == chunk_digest([None, build_intervention(targets, Value(ValueKind.MEAN), Where.PROMPT, mean_x.clone())], True)


def test_an_unreadable_checkpoint_is_one_clear_error(tmp_path: Path) -> None:
    loaded = tiny_loaded("qwen2", seed=1)
    data = _data(loaded)
    checkpoint = open_checkpoint(tmp_path, data)
    checkpoint.keep([None], True, [Measures(torch.zeros(5, dtype=torch.float64), None, None)])
    path = tmp_path / ABLATION_CHECKPOINT_FILE
    path.write_bytes(b"not safetensors")
    with pytest.raises(RunDirError, match=ABLATION_CHECKPOINT_FILE):
        open_checkpoint(tmp_path, data)
    # a readable file whose listing names a tensor it lacks
    listing = AblationCheckpoint(path, checkpoint.fingerprint)
    listing.keep([None], True, [Measures(torch.zeros(5, dtype=torch.float64), torch.ones(5, dtype=torch.float64), None)])
    from safetensors.torch import load_file, save_file

    tensors = {k: v for k, v in load_file(str(path)).items() if not k.endswith(".metric")}
    from skn.files.rundir import read_metadata

    save_file(tensors, str(path), metadata=read_metadata(path))
    with pytest.raises(RunDirError, match="remove it to start afresh"):
        open_checkpoint(tmp_path, data)


@dataclass(frozen=True)
class DyingProgress:
    """A progress sink whose task dies after `after` steps (a kill between forwards)."""

    after: int

    def task(self, description: str, total: int) -> TaskContext:
        @contextmanager
        def run() -> Iterator[Advance]:
            done = [0]

            def advance(steps: int = 1, note: str = "") -> None:
                done[0] += steps
                if done[0] >= self.after:
                    raise Killed

            yield advance

        return run()


def test_skn_ablate_resumes_after_a_kill_and_removes_its_checkpoint(tmp_path: Path) -> None:
    run = probed_tiny_run(tmp_path)
    twin = tmp_path / "twin"
    shutil.copytree(run, twin)
    config = AblationConfig(n_controls=3, items=6, batch_size=3, share=2)
    request = AblationRequest(run, config, curve=True, k_grid="1,3", wheres=(Where.PROMPT, Where.ALL))
    with pytest.raises(Killed):
        ablate_run(request, DyingProgress(after=6))
    assert (run / ABLATION_CHECKPOINT_FILE).is_file() and not (run / CURVE_FILE).exists()
    heard: list[str] = []
    ablate_run(request, notify=heard.append)
    assert any(line.startswith("resuming: ") for line in heard)
    assert not (run / ABLATION_CHECKPOINT_FILE).exists()
    ablate_run(AblationRequest(twin, config, curve=True, k_grid="1,3", wheres=(Where.PROMPT, Where.ALL)))

    def numbers(path: Path) -> object:
        record = json.loads((path / CURVE_FILE).read_text())
        return [[{k: v for k, v in point.items() if k != "seconds"} for point in curve["points"]] for curve in record["curves"]]

    assert numbers(run) == numbers(twin)
    assert not (twin / ABLATION_CHECKPOINT_FILE).exists()
