"""The model of a finished run: the one its run.json names, unless the caller names another.

Every command that runs a finished run's model again (`skn ablate`, `skn activations`, `skn plot --neuron`)
loads it here, so the rule is written once: --model if given, else run.json's model (the bundled one by its
name; a hub id at run.json's revision); a relative path an older skn recorded that does not resolve from
where skn runs now is refused naming run.json's field, not a --model the user never passed.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from skn import zoo
from skn.errors import ModelError
from skn.models.model import REVISION_KEY, LoadedModel
from skn.engine.preflight import looks_like_path
from skn.engine.request import ModelRequest
from skn.engine.run import load_requested_model
from skn.files.rundir import RUN_FILE, read_json


def run_model_request(model: ModelRequest, run: Path) -> tuple[ModelRequest, str]:
    """--model, else run.json's model (the bundled one by its name; a hub id at run.json's revision), and
    where the name came from, for messages. A relative path an older skn recorded that does not resolve from
    here is refused naming run.json's field, not as a --model the user never passed."""
    if model.name:
        return model, "--model"
    info = read_json(run / RUN_FILE)
    record = info if isinstance(info, dict) else {}
    name = str(record.get("model", ""))
    if name == zoo.BUNDLED_NAME:
        return replace(model, name=""), "--model"
    source = f"{run / RUN_FILE}: model"
    if looks_like_path(name) and not Path(name).expanduser().exists():
        raise ModelError(f"{source} '{name}' is not a folder or file from here (a relative path is read from where "
                         "you run skn); pass --model PATH")
    revision = str(record.get(REVISION_KEY, "")) if not model.revision else model.revision
    return replace(model, name=name, revision=revision), source


def load_run_model(run: Path, model: ModelRequest = ModelRequest()) -> LoadedModel:
    """The run's model (`run_model_request`), loaded."""
    return load_requested_model(*run_model_request(model, Path(run)))


__all__ = ["load_run_model", "run_model_request"]
