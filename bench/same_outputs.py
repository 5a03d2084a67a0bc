"""Do two versions of skn write the same run directories? The check behind "outputs bitwise unchanged" (#31).

    # a copy of the committed tree, laid out as the installed package (skn/, skn/kernels, skn/cli):
    mkdir -p /tmp/base && git archive HEAD skncore kernels cli | tar -x -C /tmp/base \
        && mv /tmp/base/skncore /tmp/base/skn && mv /tmp/base/kernels /tmp/base/cli /tmp/base/skn/
    python bench/same_outputs.py --out /tmp/before --pythonpath /tmp/base     # the committed version
    python bench/same_outputs.py --out /tmp/after                             # the working tree (installed)
    python bench/same_outputs.py --compare /tmp/before /tmp/after

Each version trains the bundled default (`skn probe`) and probes its prompt under a dozen settings: the
loss and a label, with and without the holdout, the null, --control, a checkpointed pass, the second
exemplar pass, predictivity and another batch size. Every file of every run directory is hashed: tensors
by their bytes and metadata, JSON by its content. Left out are what differs from run to run by design:
the run id, timings, paths, versions and dates, and the figures. About 2.5 minutes per version on 2 cores.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

SETTINGS: dict[str, list[str]] = {
    "loss_hold_null": ["--metric", "loss"],
    "loss_nohold": ["--metric", "loss", "--holdout", "0"],
    "loss_control": ["--metric", "loss", "--control", "instruction_tokens,digits"],
    "loss_control_nohold": ["--metric", "loss", "--control", "instruction_tokens", "--holdout", "0"],
    "label": ["--metric", "last_digit_shortcut==true"],
    "label_nohold_nonull": ["--metric", "last_digit_shortcut==true", "--holdout", "0", "--null", "0"],
    "label_control": ["--metric", "last_digit_shortcut==true", "--control", "instruction_tokens", "--holdout", "0"],
    "loss_checkpointed": ["--metric", "loss", "--checkpoint-every", "3"],
    "loss_second_pass": ["--metric", "loss", "--exemplars-pass", "always"],
    "predictivity": ["--metric", "last_digit_shortcut==true", "--score", "predictivity", "--holdout", "0"],
    "loss_batch3": ["--metric", "loss", "--batch-size", "3", "--null", "30"],
}
VARYING = {"run_id", "timings", "created", "versions", "prompt", "out", "date"}  # differ from run to run by design


def _without_varying(value: object) -> object:
    if isinstance(value, dict):
        return {k: _without_varying(v) for k, v in value.items() if k not in VARYING}
    if isinstance(value, list):
        return [_without_varying(v) for v in value]
    return value


def digest(path: Path) -> str | None:
    """The file's content as skn means it (see the module docstring); None for a file not compared."""
    if path.suffix in (".png", ".html", ".txt", ".log"):
        return None
    if path.suffix == ".safetensors":
        with safe_open(str(path), "pt") as handle:
            metadata = _without_varying(dict(handle.metadata() or {}))
        hashed = hashlib.sha256(json.dumps(metadata, sort_keys=True).encode())
        for name, tensor in sorted(load_file(str(path)).items()):
            hashed.update(name.encode() + str(tensor.dtype).encode() + str(tuple(tensor.shape)).encode())
            hashed.update(tensor.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        return hashed.hexdigest()
    if path.suffix == ".jsonl":
        text = json.dumps([_without_varying(json.loads(line)) for line in path.read_text().splitlines() if line.strip()])
        return hashlib.sha256(text.encode()).hexdigest()
    if path.suffix == ".json":
        return hashlib.sha256(json.dumps(_without_varying(json.loads(path.read_text())), sort_keys=True).encode()).hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_all(out: Path, pythonpath: str) -> None:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    out.mkdir(parents=True, exist_ok=True)

    def skn(args: list[str]) -> int:
        done = subprocess.run([sys.executable, "-m", "skn", *args], capture_output=True, text=True, env=env)
        if done.returncode != 0:
            print(f"skn {' '.join(args)} failed:\n{done.stderr[-2000:]}", flush=True)
        return done.returncode

    runs = {"default": (out / "default", ["probe", "--out", str(out / "default"), "--overwrite"])}
    prompt = str(out / "default" / "prompt.safetensors")
    runs.update({name: (out / name, ["probe", "--prompt", prompt, *args, "--out", str(out / name), "--overwrite"])
                 for name, args in SETTINGS.items()})
    manifest = {}
    for name, (folder, args) in runs.items():
        code = skn(args)
        files = {str(f.relative_to(folder)): digest(f) for f in sorted(folder.rglob("*")) if f.is_file()}
        manifest[name] = {"exit": code, "files": {k: v for k, v in files.items() if v is not None}}
        print(f"{name}: exit {code}, {len(manifest[name]['files'])} files", flush=True)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")


def compare(before: Path, after: Path) -> int:
    a = json.loads((before / "manifest.json").read_text())
    b = json.loads((after / "manifest.json").read_text())
    differ = [f"{run}/{name}" for run in sorted(set(a) | set(b))
              for name in sorted(set(a.get(run, {}).get("files", {})) | set(b.get(run, {}).get("files", {})))
              if a.get(run, {}).get("files", {}).get(name) != b.get(run, {}).get("files", {}).get(name)]
    failed = [run for run in sorted(set(a) | set(b)) if a.get(run, {}).get("exit") != 0 or b.get(run, {}).get("exit") != 0]
    files = sum(len(r["files"]) for r in a.values())
    print(f"{len(a)} runs, {files} files: {len(differ)} differ, {len(failed)} runs failed")
    for line in differ + [f"failed: {run}" for run in failed]:
        print(f"  {line}")
    return 1 if differ or failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, help="where to write this version's run directories and manifest.json")
    parser.add_argument("--pythonpath", default="", help="run skn from this folder (a copy of another version)")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"))
    args = parser.parse_args()
    if args.compare:
        return compare(*args.compare)
    if args.out is None:
        parser.error("--out or --compare")
    run_all(args.out, args.pythonpath)
    return 0


if __name__ == "__main__":
    sys.exit(main())
