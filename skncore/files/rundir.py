"""The run directory: the contract between computing (train, probe) and viewing (show, plot, report).

    prompt.safetensors          `prompt` [P, d] float32; metadata model, prompt_len, hidden_size, template
    stats.safetensors           `corr` [L, P, m] float32 (NaN where undefined), `count`, the moments; with
                                --control `corr` is the partial r that ranked and `corr_raw` the plain r
                                on the same examples
    neurons.json, neurons.csv   the top K: rank, layer, neuron, position, r (with --control: partial, and r_raw)
    top_activations.safetensors `activations` [K, N] float32 (neurons.json order), `metric` [N] float64
    examples.jsonl              the N validation examples in order: index, instruction, completion, meta, metric
    run.json                    configuration, seed, versions, timings, training history
    groups.json                 per-group activation summaries (tasks with metadata)

Every file is written to a temporary name, fsynced and renamed, so a run directory never holds half a
file. Each run draws a run id (a random hex string) that run.json (`run_id`), the safetensors' metadata
(`run_id`), every record of examples.jsonl and groups.json carry; readers refuse files whose ids differ
(a file copied in from another run), and neurons.json is held to stats.safetensors by its r. Files of an
older skn have no id: two files without one are not compared.

One directory, one run. `skn probe` and `skn train` refuse a non-empty `--out` unless `--overwrite` is
given, which first removes everything skn writes there (the files above, checkpoint.safetensors,
pass_checkpoint.safetensors,
report.html, plots/, error.log and stray `.*.tmp`; other files are left alone). The only skn files a
new run may find and keep are the prompt and checkpoint of the same directory, when it resumes that
training (`--resume`) or probes with that prompt (`--prompt RUN`). Without `--out` each run claims a
fresh `runs/YYYYMMDD-HHMMSS` (with `-2`, `-3`, ... when that second is taken). run.json is written
last: a run killed part way (even by kill -9) leaves a directory without run.json, which `skn show`
refuses ("missing run.json") instead of pairing files of two runs, and the next run there needs
`--overwrite`, or `--resume` where a checkpoint is there to resume from (the unfinished run's other files
are then recomputed). Viewers read only what is here, and check that the files agree.

A run claims its directory for as long as it lives (skn.files.run_claim, the hidden file `.skn-claim`): a second
run on the same `--out` is refused while the first lives, and a claim left by a killed run is taken over.

This module holds the names, the atomic writes, the directory rules and the prompt file; the probe's
files (neurons, stats, top activations, examples, groups, predictivity) are written by `skn.files.probe_files` and read back by `skn.files.probe_read`.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from skn.errors import RunDirError
from skn.models.fingerprint import FINGERPRINT_KEY
from skn.statistics.stats import PearsonStats
from skn.version import __version__

PROMPT_FILE = "prompt.safetensors"
STATS_FILE = "stats.safetensors"
NEURONS_JSON = "neurons.json"
NEURONS_CSV = "neurons.csv"
TOP_ACTIVATIONS_FILE = "top_activations.safetensors"
EXAMPLES_FILE = "examples.jsonl"
RUN_FILE = "run.json"
GROUPS_FILE = "groups.json"
CHECKPOINT_FILE = "checkpoint.safetensors"
PASS_CHECKPOINT_FILE = "pass_checkpoint.safetensors"  # the probe pass's (skn.engine.pass_checkpoint)
ABLATION_CHECKPOINT_FILE = "ablation_checkpoint.safetensors"  # skn ablate's measured sets (skn.ablation.ablate_checkpoint)
CLAIM_FILE = ".skn-claim"  # held by the run that writes the directory (skn.files.run_claim)
RUN_ID = "run_id"  # the key of the run id in run.json, the safetensors' metadata and the JSON records
PREDICTIVITY_JSON = "predictivity.json"  # with --score predictivity (skn.statistics.predictivity)
PREDICTIVITY_FILE = "predictivity.safetensors"

NEURON_COLUMNS = ("rank", "layer", "neuron", "position", "r")
NULL_COLUMNS = ("p_adjusted", "p_cell", "significant")  # with the permutation null
HOLDOUT_COLUMNS = ("r_held_out", "r_held_out_low", "r_held_out_high", "r_selection", "r_full")  # with a holdout
CONTROL_COLUMNS = ("r_raw",)  # with --control: the plain r at the neuron's cell (r is then the partial r)
FOLD_NAMES = ("selection", "confirmation")
MOMENTS = ("count", "mean_x", "m2_x", "c_xy", "mean_y", "m2_y")


# ---------------------------------------------------------------- moments in stats.safetensors


def moment_tensors(prefix: str, stats: PearsonStats) -> dict[str, Tensor]:
    """One set of moments as stats.safetensors holds it, each name after `prefix`."""
    return {
        f"{prefix}count": torch.tensor(stats.count, dtype=torch.int64),
        f"{prefix}mean_x": stats.mean_x,
        f"{prefix}m2_x": stats.m2_x,
        f"{prefix}c_xy": stats.c_xy,
        f"{prefix}mean_y": torch.tensor(stats.mean_y, dtype=torch.float64),
        f"{prefix}m2_y": torch.tensor(stats.m2_y, dtype=torch.float64),
    }


def read_moments(tensors: Mapping[str, Tensor], prefix: str) -> PearsonStats:
    """The moments `moment_tensors` wrote under `prefix` (names and shapes checked by the caller)."""
    return PearsonStats(
        count=int(tensors[f"{prefix}count"]),
        mean_x=tensors[f"{prefix}mean_x"],
        m2_x=tensors[f"{prefix}m2_x"],
        c_xy=tensors[f"{prefix}c_xy"],
        mean_y=float(tensors[f"{prefix}mean_y"]),
        m2_y=float(tensors[f"{prefix}m2_y"]),
    )


# ---------------------------------------------------------------- atomic writes


def _atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        _fsync(Path(tmp))
        os.chmod(tmp, 0o644)  # mkstemp makes it private; run files are for people to open and share
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fsync(path: Path) -> None:
    """Flush a file to disk before it is renamed into place (the rename is atomic, the data must be there)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------- one directory, one run

# Everything skn writes into a run directory (report.html and plots/ are skn.views.report's and skn.views.plots'
# defaults, named here to avoid an import cycle).
SKN_NAMES = (PROMPT_FILE, STATS_FILE, NEURONS_JSON, NEURONS_CSV, TOP_ACTIVATIONS_FILE, EXAMPLES_FILE, RUN_FILE,
             GROUPS_FILE, CHECKPOINT_FILE, "report.html", "plots", "error.log", PREDICTIVITY_FILE, PREDICTIVITY_JSON,
             "ablation.json", "ablation_curve.json", "seeds.json", "compare.json", "compare.csv", "compare.png",
             "compare.html", PASS_CHECKPOINT_FILE, ABLATION_CHECKPOINT_FILE)
TRAINING_NAMES = (PROMPT_FILE, CHECKPOINT_FILE)
CHECKPOINT_NAMES = (CHECKPOINT_FILE, PASS_CHECKPOINT_FILE)  # what --resume continues from


def _is_stray_tmp(name: str) -> bool:
    return name.startswith(".") and name.endswith(".tmp")


def make_run_directory(path: Path) -> Path:
    """Create the run directory `path` (and its parents); a file in the way is a RunDirError."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RunDirError(f"--out {path}: exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunDirError(f"--out {path}: cannot create the run directory ({err.strerror or err})") from None
    return path


def _not_empty(path: Path, present: Sequence[str], resume: bool) -> RunDirError:
    """Why a run cannot start in `path`, naming only flags that would work there."""
    shown = ", ".join(present[:4]) + (", ..." if len(present) > 4 else "")
    finished = RUN_FILE in present
    resumable = not finished and any((path / name).is_file() for name in CHECKPOINT_NAMES)
    if resume and finished:
        why = "it holds a finished run (run.json) and --resume continues an unfinished one"
    elif resume and resumable:
        why = "files that are not skn's are in the way"
    elif resume:
        why = "no checkpoint to resume from"
    else:
        why = ""
    hint = "pass --overwrite to replace the run there" + (", --resume to continue it" if resumable and not resume else "")
    return RunDirError(f"--out {path}: not empty (holds {shown}){'; ' + why if why else ''}; {hint}, or choose another --out")


def prepare_run_directory(path: Path, overwrite: bool = False, keep: Sequence[str] = (), resume: bool = False) -> Path:
    """Make `path` ready for one new run (see the module docstring): create it, or check it is empty but
    for `keep` (and the run's claim), or with `overwrite` remove what skn wrote there before, or with `resume`
    and a checkpoint among `keep` remove what an unfinished run (no run.json) left beside it; then check it
    is writable."""
    path = make_run_directory(path)
    try:
        present = sorted(p.name for p in path.iterdir())
    except OSError as err:
        raise RunDirError(f"--out {path}: cannot read the run directory ({err.strerror or err})") from None
    for name in present:
        if _is_stray_tmp(name):  # left by a killed run: never half a file, but not ours to keep either
            (path / name).unlink(missing_ok=True)
    present = [n for n in present if not _is_stray_tmp(n) and n not in keep and n != CLAIM_FILE]
    leftovers = (resume and RUN_FILE not in present and all(n in SKN_NAMES for n in present)
                 and any((path / n).is_file() for n in keep if n in CHECKPOINT_NAMES))
    if present and not (overwrite or leftovers):
        raise _not_empty(path, present, resume)
    for name in present:
        target = path / name
        if name in SKN_NAMES:
            try:
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target)
                else:
                    target.unlink()
            except OSError as err:
                flag = "--overwrite" if overwrite else "--resume"
                raise RunDirError(f"{flag}: cannot remove {target} ({err.strerror or err})") from None
    probe_file = path / ".skn-write-check.tmp"
    try:
        probe_file.write_bytes(b"")
        probe_file.unlink()
    except OSError as err:
        raise RunDirError(f"--out {path}: not writable ({err.strerror or err})") from None
    return path


def fresh_run_directory(root: Path, stamp: str) -> Path:
    """Claim root/STAMP (or STAMP-2, STAMP-3, ...): mkdir is atomic, so two runs started in the same
    second get two directories."""
    try:
        Path(root).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunDirError(f"{root}: cannot create the runs folder ({err.strerror or err})") from None
    for k in range(1, 10_000):
        candidate = Path(root) / (stamp if k == 1 else f"{stamp}-{k}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
        except OSError as err:
            raise RunDirError(f"{candidate}: cannot create the run directory ({err.strerror or err})") from None
    raise RunDirError(f"{root}: no free run directory name for {stamp}")


def write_bytes(path: Path, data: bytes) -> None:
    """Write a whole binary file (a PNG, an HTML page) atomically."""
    _atomic_write(path, lambda tmp: tmp.write_bytes(data))


def write_text(path: Path, text: str) -> None:
    """Write a whole text file atomically."""
    _atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_tensors(path: Path, tensors: Mapping[str, Tensor], metadata: Mapping[str, str]) -> None:
    """Write a safetensors file atomically (contiguous CPU copies of the tensors)."""
    payload = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    _atomic_write(path, lambda tmp: save_file(payload, str(tmp), metadata=dict(metadata)))


def _strict(value: object) -> object:
    """The same value with every non-finite float replaced by null: run files are strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    return value


def write_json(path: Path, value: object) -> None:
    """Write strict JSON (NaN and infinities as null) atomically."""
    write_text(path, json.dumps(_strict(value), indent=2, ensure_ascii=False, allow_nan=False) + "\n")


def json_safe(value: float) -> float | None:
    return None if math.isnan(value) else value


# ---------------------------------------------------------------- prompt


@dataclass(frozen=True)
class PromptFile:
    """A trained soft prompt and what it was trained for."""

    prompt: Tensor  # [P, d] float32
    model: str
    template: str
    fingerprint: str = ""  # the weights it was trained on (skn.models.fingerprint); "" in files of an older skn


def write_prompt(directory: Path, prompt: PromptFile) -> Path:
    path = Path(directory) / PROMPT_FILE
    tensor = prompt.prompt.detach().to("cpu", torch.float32)
    write_tensors(
        path,
        {"prompt": tensor},
        {
            "model": prompt.model,
            "prompt_len": str(tensor.shape[0]),
            "hidden_size": str(tensor.shape[1]),
            "template": prompt.template,
            "skn_version": __version__,
            **({FINGERPRINT_KEY: prompt.fingerprint} if prompt.fingerprint else {}),
        },
    )
    return path


def read_prompt(path: Path) -> PromptFile:
    path = Path(path)
    if path.is_dir():
        path = path / PROMPT_FILE
    if not path.is_file():
        raise RunDirError(f"{path}: no such prompt file")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            if "prompt" not in handle.keys():
                raise RunDirError(f"{path}: no tensor named 'prompt' (found: {', '.join(handle.keys())})")
            tensor = handle.get_tensor("prompt")
    except RunDirError:
        raise
    except Exception as err:
        raise RunDirError(f"{path}: not a readable safetensors file ({err})") from None
    if tensor.dim() != 2:
        raise RunDirError(f"{path}: 'prompt' must be [P, d], got shape {tuple(tensor.shape)}")
    return PromptFile(prompt=tensor.to(torch.float32), model=metadata.get("model", ""), template=metadata.get("template", ""),
                      fingerprint=metadata.get(FINGERPRINT_KEY, ""))


# ---------------------------------------------------------------- probe results


def require_file(directory: Path, name: str) -> Path:
    path = directory / name
    if not path.is_file():
        raise RunDirError(f"{directory}: missing {name} (is this the --out of a finished `skn probe`?)")
    return path


def load_tensors(path: Path) -> dict[str, Tensor]:
    try:
        return load_file(str(path))
    except Exception as err:
        raise RunDirError(f"{path}: not a readable safetensors file ({err})") from None


def read_metadata(path: Path) -> dict[str, str]:
    """The metadata of a safetensors file ({} when it has none)."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except Exception as err:
        raise RunDirError(f"{path}: not a readable safetensors file ({err})") from None


def check_one_run(reference: Path, run_id: str, files: Sequence[tuple[Path, str]]) -> None:
    """Every file's run id must be `reference`'s (run.json's): a file copied in from another run is refused,
    naming both. "" is a file of an older skn, which wrote none: two of them are not compared."""
    for path, other in files:
        if other != run_id:
            raise RunDirError(f"{path} and {reference} are files of two runs ({path.name}: run id {other or 'none'}; "
                              f"{reference.name}: run id {run_id or 'none'}); a run directory holds one run's files")


def read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise RunDirError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise RunDirError(f"{path}: not readable UTF-8 JSON ({err})") from None
