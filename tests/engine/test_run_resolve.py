"""One resolve step for a run's probe (skn.engine.run.probe_config_for): a notebook's `run_probe(request)` and
`skn probe` with the same options probe alike. Before issue #31 the CLI chose the probe batch and the null's
seed itself, so `run_probe` with `DataRequest(seed=3)` permuted with seed 0 while `skn probe --seed 3` used 3."""

from __future__ import annotations

from pathlib import Path

import pytest

import skn.cli.probe_cmd as probe_cmd
from skn.engine.probe_config import ProbeConfig
from skn.cli.main import main
from skn.statistics.null import NullConfig
from skn.engine.request import DataRequest, ProbeRequest, TrainRequest
from skn.engine.run import probe_config_for


def test_the_data_seed_seeds_the_null_and_the_folds_and_the_training_batch_probes() -> None:
    request = ProbeRequest(data=DataRequest(seed=3), train=TrainRequest(batch_size=4),
                           probe=ProbeConfig(null=NullConfig(50, 0.1)))
    config = probe_config_for(request)
    assert (config.null.seed, config.holdout_seed, config.batch_size) == (3, 3, 4)
    assert (config.null.permutations, config.null.alpha) == (50, 0.1)  # what the request chose stays


def test_the_cli_and_a_library_request_resolve_to_the_same_probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[ProbeRequest] = []

    def capture(request: ProbeRequest, *args: object, **kwargs: object) -> None:
        seen.append(request)
        raise SystemExit(7)  # stop the command here

    monkeypatch.setattr(probe_cmd, "run_probe", capture)
    with pytest.raises(SystemExit):
        main(["probe", "--seed", "3", "--batch-size", "4", "--null", "50", "--alpha", "0.1", "--out", str(tmp_path / "run")])
    library = ProbeRequest(data=DataRequest(seed=3), train=TrainRequest(batch_size=4),
                           probe=ProbeConfig(null=NullConfig(50, 0.1)))
    assert probe_config_for(seen[0]) == probe_config_for(library)
