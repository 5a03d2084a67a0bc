"""Probe overhead: the statistics pass against a bare forward over the same batches, and memory vs N.

A random Qwen2 (8 layers, hidden 512, intermediate 1376, vocab 8000), random token rows (instruction of
6-14 tokens, P = 20 prompt slots, completion of 4 tokens + EOS), batch 16. For each N a fresh process
measures, alternating the two so that machine noise hits both alike:

    bare   : completion_scores (the per-example loss) over every batch, no hooks
    probe  : skn.engine.probe.statistics_pass with metric `loss` (hooks + one batch's slab + float64 update)
    exemplar pass : skn.engine.probe.exemplar_pass for 10 neurons of the last layer (the worst case)

whole passes over the N examples, the three in turn, best of --repeats rounds each (run it on a quiet
machine). Peak RSS covers the whole child process: model, data and the streamed passes over all N.
Prints a table of ratios. Usage: python bench/probe_overhead.py [--sizes 256,1024,4096] [--repeats 2]

--end-to-end: whole processes instead (start-up, model build, the pass, ranking, null, holdout, the top
activations, the run directory written), one fresh process per measurement, best of --repeats:

    bare        : the model built and completion_scores over every batch (loss's forward)
    bare-prompt : the model built and a forward of instruction + prompt only (a label's forward)
    loss        : skn.engine.api.probe --metric loss with the default config (null 100, the activation store)
                  and skn.files.probe_files.write_probe_run, the library calls `skn probe` makes once it has a prompt
    label       : the same with a label metric grp==a (the in-pass mode)
    loss-always : loss with --exemplars-pass always (the second pass, as before issue #11)

and prints, between the two sizes, slope = (t(N2) - t(N1)) / (t_bare(N2) - t_bare(N1)) so that
process start-up cancels, and each process's peak RSS. Usage:
    python bench/probe_overhead.py --end-to-end [--sizes 256,2048] [--repeats 2] [--kinds label,loss]

--in-pass: one process, `skn.engine.api.probe` with the default config (null 100, holdout, the store) for `loss` and a
label, --repeats rounds; a timer around each part of the pass's own work (the prompt rows' gather, the folds'
moments, the null, the store) says how much of the pass it took. pass/rest = the pass over the pass less those
parts (the forward and the hooks' plumbing): the statistics' cost as a multiple of the forward, measured at
every layer of every batch, so a noisy machine's drift hits both alike (a lower bound: what the parts do to the
forward's caches is not counted; --end-to-end counts everything).
    python bench/probe_overhead.py --in-pass [--sizes 512] [--repeats 3]

--real-bare RUN: the bare forward of a real probe run (its model, prompt, template, batch size and
validation examples, read from the run directory): completion_scores over the same batches, no hooks, best
of --repeats; compare with run.json's timings (probe_pass_s, null_s, exemplar_pass_s, store_read_s).
    python bench/probe_overhead.py --real-bare RUN [--repeats 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from types import SimpleNamespace

import torch


def build(n: int, seed: int = 0) -> tuple[object, list, list, torch.Tensor]:
    from transformers import AutoModelForCausalLM, Qwen2Config

    from skn.inputs.data import Example
    from skn.inputs.layout import Encoded
    from skn.models.model import wrap_loaded

    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=8000, hidden_size=512, intermediate_size=1376, num_hidden_layers=8,
                         num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=256)
    model = AutoModelForCausalLM.from_config(config)
    tokenizer = SimpleNamespace(pad_token_id=0, eos_token_id=1)
    loaded = wrap_loaded("random-qwen2-8x512", model, tokenizer, torch.device("cpu"))
    gen = torch.Generator().manual_seed(seed)
    rows, examples = [], []
    for i in range(n):
        length = int(torch.randint(6, 15, (1,), generator=gen))
        instruction = tuple(int(t) for t in torch.randint(2, 8000, (length,), generator=gen))
        completion = tuple(int(t) for t in torch.randint(2, 8000, (4,), generator=gen)) + (1,)
        rows.append(Encoded(instruction, completion))
        examples.append(Example("", "", {}, f"bench:{i}"))
    prompt = torch.randn(20, 512, generator=gen) * 0.02
    return loaded, rows, examples, prompt


def measure(n: int, repeats: int) -> dict[str, float]:
    """Whole passes over the N examples, bare / probe / exemplar in turn, `repeats` rounds, the best
    round of each: noise on the machine then hits all three alike rather than one of them."""
    from skn.training.scoring import completion_scores
    from skn.inputs.layout import make_batch
    from skn.inputs.metrics import parse_metric
    from skn.engine.probe import exemplar_pass, statistics_pass
    from skn.ranking.rank import Neuron

    loaded, rows, examples, prompt = build(n)
    batch_size = 16
    metric = parse_metric("loss")
    neurons = [Neuron(k + 1, 7, k * 100, k % 20, 0.0) for k in range(10)]

    def bare() -> None:
        with torch.no_grad():
            for first in range(0, n, batch_size):
                completion_scores(loaded, make_batch(rows[first : first + batch_size], 20, 0), prompt)

    def probe() -> None:
        statistics_pass(loaded, prompt, rows, examples, metric, batch_size)

    def exemplar() -> None:
        exemplar_pass(loaded, prompt, rows, neurons, batch_size)

    with torch.no_grad():
        completion_scores(loaded, make_batch(rows[:batch_size], 20, 0), prompt)  # warm-up
    best = {"bare": float("inf"), "probe": float("inf"), "exemplar": float("inf")}
    for _ in range(repeats):
        for name, fn in (("bare", bare), ("probe", probe), ("exemplar", exemplar)):
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return {"n": n, **best, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


KINDS = ("bare", "bare-prompt", "loss", "label", "loss-always")
BARE_OF = {"loss": "bare", "label": "bare-prompt", "loss-always": "bare"}


def whole_process(kind: str, n: int) -> dict[str, object]:
    """One end-to-end measurement, run as a fresh process (--whole KIND --child N)."""
    import tempfile
    from pathlib import Path

    from skn.engine.api import probe

    from skn.engine.probe_config import ProbeConfig
    from skn.inputs.data import Example
    from skn.inputs.layout import make_batch
    from skn.models.model import LoadedModel
    from skn.files.probe_files import write_probe_run
    from skn.training.scoring import completion_scores
    from skn.engine.probe import _forward_to_sites, capture_activations
    from skn.engine.probe_config import ExemplarsPass

    start = time.perf_counter()
    loaded, rows, examples, prompt = build(n)
    assert isinstance(loaded, LoadedModel)
    batch_size = 16
    extra: dict[str, object] = {}
    if kind == "bare":
        with torch.no_grad():
            for first in range(0, n, batch_size):
                completion_scores(loaded, make_batch(rows[first : first + batch_size], 20, 0), prompt)
    elif kind == "bare-prompt":
        last = loaded.sites.num_layers - 1
        with torch.no_grad(), capture_activations(loaded, [last], lambda layer, x: None, stop_after=last):
            for first in range(0, n, batch_size):
                _forward_to_sites(loaded, make_batch(rows[first : first + batch_size], 20, 0, with_completion=False), prompt)
    else:
        import skn.engine.api
        from skn.inputs.layout import Template

        # the bench's rows are token ids already: the probe's encoding step hands them over as they are
        skn.engine.api.encode = lambda loaded, examples, template, prompt_len: tuple(rows)  # type: ignore[assignment]
        labelled = [Example("", "", {"grp": "a" if i % 3 == 0 else "b"}, f"bench:{i}") for i in range(n)]
        mode = ExemplarsPass.ALWAYS if kind == "loss-always" else ExemplarsPass.AUTO
        config = ProbeConfig(batch_size=batch_size, top_k=10, template=Template.PLAIN, exemplars_pass=mode)
        result = probe(loaded, prompt, labelled, "grp==a" if kind == "label" else "loss", config)
        with tempfile.TemporaryDirectory() as out:
            write_probe_run(Path(out), result)
        extra = {"exemplars": result.info.extra["exemplars"], "timings": dict(result.info.timings)}
    return {"kind": kind, "n": n, "seconds": time.perf_counter() - start, **extra}


def in_pass(n: int, repeats: int) -> None:
    """The probe pass's own statistics work against the rest of the pass, timed inside one pass."""
    from collections import Counter

    import skn.engine.api
    import skn.statistics.exemplar_store
    import skn.statistics.folds
    import skn.inputs.layout
    import skn.statistics.null
    import skn.statistics.stats
    from skn.engine.api import probe
    from skn.engine.probe_config import ProbeConfig
    from skn.inputs.data import Example
    from skn.inputs.layout import Template
    from skn.models.model import LoadedModel

    spent: Counter[str] = Counter()
    depth = [0]

    def timed(owner: object, name: str, part: str) -> None:
        inner = getattr(owner, name)

        def wrapper(*args: object, **kwargs: object) -> object:
            depth[0] += 1
            start = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                depth[0] -= 1
                if depth[0] == 0:  # an outer part's time includes what it calls
                    spent[part] += time.perf_counter() - start

        setattr(owner, name, wrapper)

    for owner, name, part in ((getattr(skn.inputs.layout, "PromptRowBuffer", None), "gather", "gather"),
                              (skn.statistics.folds.FoldAccumulator, "add_layer", "moments"),
                              (skn.statistics.folds.FoldAccumulator, "finish_batch", "moments"),
                              (skn.statistics.stats.StatsAccumulator, "add_layer", "moments"),
                              (skn.statistics.stats.StatsAccumulator, "finish_batch", "moments"),
                              (skn.statistics.null.SelectedRows, "add_layer", "null"),
                              (skn.statistics.null.NullAccumulator, "add_layer", "null"),
                              (skn.statistics.exemplar_store.ActivationStore, "add_layer", "store"),
                              (skn.statistics.exemplar_store.ActivationStore, "finish_batch", "store")):
        if owner is not None and hasattr(owner, name):  # an older skn lacks some (bench it with PYTHONPATH)
            timed(owner, name, part)
    loaded, rows, _, prompt = build(n)
    assert isinstance(loaded, LoadedModel)
    skn.engine.api.encode = lambda loaded, examples, template, prompt_len: tuple(rows)  # type: ignore[assignment]
    labelled = [Example("", "", {"grp": "a" if i % 3 == 0 else "b"}, f"bench:{i}") for i in range(n)]
    parts = ("gather", "moments", "null", "store")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, N = {n}, batch 16; each part's share of "
          "the rest of the pass (the forward)", flush=True)
    print(f"{'metric':>7} {'round':>5} {'pass s':>7} {'parts s':>7} {'pass/rest':>9} " + " ".join(f"{p:>8}" for p in parts))
    for round_ in range(repeats):
        for metric in ("loss", "grp==a"):
            spent.clear()
            result = probe(loaded, prompt, labelled, metric, ProbeConfig(batch_size=16, top_k=10, template=Template.PLAIN))
            total = float(result.info.timings["probe_pass_s"])
            own = sum(spent.values())
            rest = total - own
            print(f"{'loss' if metric == 'loss' else 'label':>7} {round_ + 1:>5} {total:>7.2f} {own:>7.2f} {total / rest:>9.3f} "
                  + " ".join(f"{100 * spent[p] / rest:>7.1f}%" for p in parts), flush=True)


def end_to_end(sizes: list[int], repeats: int, kinds: tuple[str, ...] = KINDS) -> None:
    print(f"torch {torch.__version__}, whole processes, best of {repeats}", flush=True)
    kinds = tuple(dict.fromkeys(k for kind in kinds for k in (BARE_OF.get(kind, kind), kind)))  # each with its bare
    best: dict[tuple[str, int], dict[str, object]] = {}
    for n in sizes:
        for _ in range(repeats):
            for kind in kinds:  # in turn, so that machine noise hits every kind alike
                out = subprocess.run([sys.executable, __file__, "--whole", kind, "--child", str(n)],
                                     check=True, capture_output=True, text=True)
                r = json.loads(out.stdout.strip().splitlines()[-1])
                print(json.dumps(r), flush=True)
                key = (kind, n)
                if key not in best or float(r["seconds"]) < float(best[key]["seconds"]):  # type: ignore[arg-type]
                    best[key] = r
    lo, hi = sizes[0], sizes[-1]
    print(f"{'kind':>12} " + " ".join(f"{'s@' + str(n):>9} {'RSS MB@' + str(n):>11}" for n in sizes)
          + f" {'slope vs bare':>13} {'RSS ratio':>9}")
    for kind in kinds:
        t = {n: float(best[(kind, n)]["seconds"]) for n in sizes}  # type: ignore[arg-type]
        rss = {n: float(best[(kind, n)]["peak_rss_mb"]) for n in sizes}  # type: ignore[arg-type]
        bare = BARE_OF.get(kind, kind)
        tb = {n: float(best[(bare, n)]["seconds"]) for n in sizes}  # type: ignore[arg-type]
        slope = (t[hi] - t[lo]) / (tb[hi] - tb[lo])
        print(f"{kind:>12} " + " ".join(f"{t[n]:>9.2f} {rss[n]:>11.0f}" for n in sizes)
              + f" {slope:>13.3f} {rss[hi] / rss[lo]:>9.3f}", flush=True)


def real_bare(run_dir: str, repeats: int) -> dict[str, object]:
    """Best of `repeats` bare forwards (completion_scores, no hooks) over a probe run's own batches."""
    from pathlib import Path

    from skn.engine.api import encode
    from skn.inputs.layout import make_batch
    from skn.models.model import batch_pad_id, load_model
    from skn.files.probe_read import read_probe_run, run_prompt, run_template
    from skn.training.scoring import completion_scores

    run = read_probe_run(Path(run_dir))
    settings = run.info.probe_config
    assert settings is not None
    loaded = load_model(run.info.model)
    prompt = run_prompt(Path(run_dir), run).prompt.to(loaded.device)
    rows = encode(loaded, run.examples, run_template(run), int(prompt.shape[0]))
    pad, size = batch_pad_id(loaded), settings.batch_size
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        with torch.no_grad():
            for first in range(0, len(rows), size):
                completion_scores(loaded, make_batch(rows[first : first + size], int(prompt.shape[0]), pad), prompt)
        best = min(best, time.perf_counter() - start)
    timings = {k: round(float(v), 2) for k, v in run.info.timings.items()}
    return {"run": run_dir, "n": len(rows), "batch_size": size, "bare_s": round(best, 2), "run_timings": timings,
            "probe_pass_over_bare": round(float(run.info.timings.get("probe_pass_s", float("nan"))) / best, 3)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="256,1024,4096")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--child", type=int, default=0)
    parser.add_argument("--end-to-end", action="store_true")
    parser.add_argument("--in-pass", action="store_true", help="one process: the pass's statistics parts timed inside it")
    parser.add_argument("--kinds", default=",".join(KINDS), help="--end-to-end: the kinds to run (each with its bare)")
    parser.add_argument("--whole", default="")
    parser.add_argument("--real-bare", default="", help="a probe run directory: time its bare forward")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.real_bare:
        print(json.dumps(real_bare(args.real_bare, args.repeats)))
        return
    if args.whole:
        print(json.dumps({**whole_process(args.whole, args.child),
                          "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
        return
    if args.in_pass:
        for n in (int(v) for v in args.sizes.split(",")):
            in_pass(n, args.repeats)
        return
    if args.end_to_end:
        end_to_end([int(s) for s in args.sizes.split(",")], args.repeats, tuple(args.kinds.split(",")))
        return
    if args.child:
        print(json.dumps(measure(args.child, args.repeats)))
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, best of {args.repeats} rounds", flush=True)
    print(f"{'N':>6} {'bare s':>8} {'probe s':>8} {'probe/bare':>10} {'exemplar/bare':>13} {'peak RSS MB':>12}", flush=True)
    results = []
    for n in (int(s) for s in args.sizes.split(",")):
        out = subprocess.run([sys.executable, __file__, "--child", str(n), "--repeats", str(args.repeats)],
                             check=True, capture_output=True, text=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        results.append(r)
        print(f"{r['n']:>6} {r['bare']:>8.2f} {r['probe']:>8.2f} {r['probe'] / r['bare']:>10.3f} "
              f"{r['exemplar'] / r['bare']:>13.3f} {r['peak_rss_mb']:>12.0f}", flush=True)
    first, last = results[0], results[-1]
    print(f"peak RSS at N={last['n']} / at N={first['n']}: {last['peak_rss_mb'] / first['peak_rss_mb']:.3f}")


if __name__ == "__main__":
    main()
