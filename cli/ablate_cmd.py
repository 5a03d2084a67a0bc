"""`skn ablate RUN`: replace a run's top neurons in the forward pass and compare with random neurons."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from skn.ablation.ablate import AblationConfig
from skn.ablation.ablate_test import DepartureTest, parse_test
from skn.ablation.intervention import Value, parse_value, parse_values, parse_wheres
from skn.ablation.ablate_curve import parse_scales
from skn.ablation.ablate_run import AblationRequest, ablate_run
from skn.views.console import say
from skn.checks import seed_value, thread_count
from skn.engine.progress import RichProgress
from skn.engine.request import ModelRequest, default_of
from skn.engine.run import set_threads

from skn.cli.ablate_render import ablation_tables, curve_tables
from skn.cli.options import model_options, option, threads_option

_VALUE = default_of(AblationConfig, "value")
_DEFAULT_VALUE = _VALUE.text if isinstance(_VALUE, Value) else "mean"  # --value is text: "mean", "mean,zero"


@click.command("ablate")
@click.argument("run", type=click.Path(path_type=Path))
@model_options
@option("--neurons", AblationRequest, "neurons", metavar="L.I[@k],...")
@option("--top-k", AblationRequest, "top_k")
@option("--value", AblationConfig, "value", default=_DEFAULT_VALUE, type=str)
@option("--where", AblationConfig, "where")
@option("--consensus", AblationRequest, "consensus", metavar="COMPARE_DIR")
@option("--controls", AblationConfig, "n_controls")
@option("--test", AblationConfig, "test", type=click.Choice([t.value for t in DepartureTest]))
@option("--per-neuron", AblationConfig, "per_neuron")
@option("--items", AblationConfig, "items")
@option("--seed", AblationConfig, "seed")
@option("--batch-size", AblationConfig, "batch_size")
@option("--share", AblationConfig, "share")
@option("--curve", AblationRequest, "curve")
@option("--k", AblationRequest, "k_grid", metavar="K,K,...")
@click.option("--scales", default="", metavar="S,S,...",
              help="A curve over S instead: the set (top K or --neurons) steered by scale:S for each S, same controls.")
@threads_option
def ablate_command(run: Path, model: ModelRequest, neurons: str, top_k: int, value: str, where: str, consensus: str,
                   n_controls: int, test: str, per_neuron: int, items: int, seed: int, batch_size: int, share: int,
                   curve: bool, k_grid: str, scales: str, threads: int) -> None:
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
    # --scales: the default --value is not asked for
    values = () if factors and value == _DEFAULT_VALUE else parse_values(value)
    wheres = parse_wheres(where)
    config = AblationConfig(value=values[0] if values else parse_value(_DEFAULT_VALUE), where=wheres[0],
                            n_controls=n_controls, per_neuron=per_neuron, items=items, seed=seed, batch_size=batch_size,
                            share=share, test=parse_test(test))
    request = AblationRequest(run, config, neurons, top_k, consensus, curve, k_grid, factors,
                              values if len(values) > 1 else (), wheres, model)
    console = Console()
    done = ablate_run(request, RichProgress(), lambda line: say(console, line))
    tables = curve_tables(done.curve) if done.curve is not None else []
    tables += ablation_tables(done.ablation) if done.ablation is not None else []
    for table in tables:
        console.print(table)
    say(console, "wrote " + " and ".join(str(path) for path in done.written))
