"""`skn ablate RUN`: replace a run's top neurons in the forward pass and compare with random neurons."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click
from rich.console import Console

from skn import zoo
from skn.ablate import AblationConfig
from skn.ablate_test import DepartureTest, parse_test
from skn.intervention import parse_value, parse_values, parse_wheres
from skn.ablate_curve import parse_scales
from skn.ablate_run import ABLATION_FILE, CURVE_FILE, AblationRequest, read_ablation, read_curve, run_ablation, run_curve
from skn.ablate_view import ablation_figure, curve_figure
from skn.console import say
from skn.checks import seed_value, thread_count
from skn.errors import ModelError, UsageError
from skn.plots import PLOTS_DIR, png_bytes
from skn.probe_files import read_probe_run
from skn.model import REVISION_KEY
from skn.preflight import looks_like_path
from skn.progress import RichProgress
from skn.request import ModelRequest
from skn.run import load_requested_model, set_threads
from skn.rundir import RUN_FILE, read_json, write_bytes

from skn.cli.ablate_render import ablation_tables, curve_tables
from skn.cli.options import model_options, threads_option


def _model_request(model: ModelRequest, run: Path) -> tuple[ModelRequest, str]:
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


@click.command("ablate")
@click.argument("run", type=click.Path(path_type=Path))
@model_options
@click.option("--neurons", default="", metavar="L.I[@k],...",
              help="Neurons to ablate (layer.index, @k = prompt slot; no @k = every slot) [default: the run's top K].")
@click.option("--top-k", default=0, show_default=True, help="Ablate the run's top K neurons at their best slots (0 = as many as neurons.json).")
@click.option("--value", default="mean", show_default=True,
              help="mean (the neuron's validation mean at the slot), zero, or scale:S; with --curve several, e.g. mean,zero (one curve each).")
@click.option("--where", default="prompt", show_default=True,
              help="prompt: the soft-prompt slots; all: every position of the sequence; with --curve or --scales both: prompt,all.")
@click.option("--consensus", default="", metavar="COMPARE_DIR",
              help="Rank by the consensus of a `skn compare` folder (its compare.json) instead of the run's r; each neuron "
                   "at this run's best slot for it.")
@click.option("--controls", default=20, show_default=True, help="Random sets of the same size, layers and slots.")
@click.option("--test", "test", default=DepartureTest.AUTO.value, show_default=True,
              type=click.Choice([t.value for t in DepartureTest]),
              help="The set against its controls: empirical (rank; needs C >= G / 0.05 - 1 over G points), log-t (a "
                   "prediction-interval t test on log |effect|; ~10 controls suffice), auto = empirical where it can "
                   "reach 0.05, else log-t.")
@click.option("--per-neuron", default=10, show_default=True, help="Ablate this many neurons of the set one at a time.")
@click.option("--items", default=0, show_default=True, help="Sample this many validation items (seeded; 0 = all).")
@click.option("--seed", default=0, show_default=True, help="Seeds the item sample and the controls.")
@click.option("--batch-size", default=16, show_default=True, help="Items per forward (per set).")
@click.option("--share", default=1, show_default=True,
              help="Sets measured together in one forward (the items repeated once per set): ceil(sets / share) passes, "
                   "each forward share x --batch-size rows.")
@click.option("--curve", is_flag=True, help="A dose-response curve: the top K against random sets of K over a grid of K.")
@click.option("--k", "k_grid", default="", metavar="K,K,...", help="The curve's K grid [default: 1,3,10,30,... up to every neuron].")
@click.option("--scales", default="", metavar="S,S,...",
              help="A curve over S instead: the set (top K or --neurons) steered by scale:S for each S, same controls.")
@threads_option
def ablate_command(run: Path, model: ModelRequest, neurons: str, top_k: int, value: str, where: str, consensus: str,
                   controls: int, test: str, per_neuron: int, items: int, seed: int, batch_size: int, share: int, curve: bool,
                   k_grid: str, scales: str, threads: int) -> None:
    """Does a neuron matter? Re-run a probe run's validation items with its top neurons replaced by their
    validation mean (or 0) and compare the change in loss, metric and accuracy with random neuron sets.
    Cost: 2 + --controls + --per-neuron sets, one pass over the items each (ceil(sets / --share) passes with
    --share). Writes RUN/ablation.json and RUN/plots/ablation.png; --curve and --scales write
    RUN/ablation_curve.json and RUN/plots/ablation_curve.png (one panel per --value x --where).

    \b
    Example:
      skn ablate runs/stories --controls 20 --items 100
      skn ablate runs/stories --neurons 4.22@7,1.143 --value zero --where all
      skn ablate runs/stories --curve --value zero --where all      # writes RUN/ablation_curve.json
      skn ablate runs/stories --curve --value mean,zero --where prompt,all --share 8
      skn ablate runs/stories/seed-0 --curve --consensus runs/stories  # `skn probe --seeds` wrote compare.json
      skn ablate runs/stories --top-k 30 --scales 0,0.5,2,4,8
    """
    seed_value("--seed", seed)
    thread_count("--threads", threads)
    set_threads(threads)
    factors = parse_scales(scales) if scales else ()
    if k_grid and not curve:
        raise UsageError("--k sets the grid of --curve; add --curve")
    if curve and factors:
        raise UsageError("--curve (over K) and --scales (over S) are two curves: give one")
    values = () if factors and value == "mean" else parse_values(value)  # --scales: the default --value is not asked for
    wheres = parse_wheres(where)
    if not (curve or factors) and (len(values) > 1 or len(wheres) > 1):
        raise UsageError("several --value or --where measure one curve each: add --curve (or --scales for --where)")
    config = AblationConfig(value=values[0] if values else parse_value("mean"), where=wheres[0], n_controls=controls,
                            per_neuron=per_neuron, items=items, seed=seed, batch_size=batch_size, share=share,
                            test=parse_test(test))
    request = AblationRequest(run, config, neurons, top_k, consensus)
    read_probe_run(run)  # a missing run, or files of two runs, fail before the model loads
    loaded = load_requested_model(*_model_request(model, run))
    console = Console()
    if curve or factors:
        run_curve(loaded, request, k_grid, factors, RichProgress(), values if len(values) > 1 else (), wheres,
                  lambda line: say(console, line))
        curve_record = read_curve(run)
        for table in curve_tables(curve_record):
            console.print(table)
        path = run / PLOTS_DIR / "ablation_curve.png"
        write_bytes(path, png_bytes(curve_figure(curve_record)))
        say(console, f"wrote {run / CURVE_FILE} and {path}")
        return
    run_ablation(loaded, request, RichProgress(), lambda line: say(console, line))
    record = read_ablation(run)
    for table in ablation_tables(record):
        console.print(table)
    figure = run / PLOTS_DIR / "ablation.png"
    write_bytes(figure, png_bytes(ablation_figure(record)))
    say(console, f"wrote {run / ABLATION_FILE} and {figure}")
