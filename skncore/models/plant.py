"""Known-answer models: a skill neuron planted by hand, so that skn's checks can be tested on a known yes.

A planted neuron is an ordinary FFN neuron of a gated (SiLU) layer whose three weight vectors are set:

    read   gate row and up row (what the neuron responds to), mixed with its own by the read strength a:
               gate = (1 - a) gate_0 + a |gate_0| g / |g|,  g = w / sd_z + 3 v
               up   = (1 - a) up_0   + a |up_0| v / |v|
           (each planted row scaled to the norm of the neuron's own, so a is the share of the neuron's input
           weight that reads the feature)
           w   the direction of the layer's FFN input (after the layer norm, averaged over the soft-prompt
               slots, under the given prompts) that best predicts a feature (a ridge regression of the
               feature on the inputs, each prompt's rows centred on their mean), made orthogonal to every
               prompt's mean input m_p, and sd_z the spread of z = h . w
           v   the least-norm vector with m_p . v = 1 for every prompt, so h . v is about 1 on every item
               under each of them (a constant input the FFN has no bias for)
           so at a = 1 the activation is c_u (h . v) silu(c_g (z / sd_z + 3 (h . v))), with h . v about 1: a
           neuron that rises with the feature at every slot (monotone while z / sd_z > -3 - 1.28 / c_g).
           a = 0 leaves the neuron as it was.
    write  down-projection column (what the neuron does downstream), replaced by
               b * mean column norm of the layer * (unit unembedding row of `write_token`)
           so b = 0 makes a neuron that correlates without mattering (ablating it changes nothing), and
           b > 0 pushes the logit of `write_token` by an amount proportional to the activation.

The read direction is measured with the prompts the probe will use (the slots' inputs depend on them), so a
known-answer experiment makes its prompts on the base model first, plants, and probes the planted model with
those prompts (`skn probe --prompt`). `write_planted` saves an ordinary Hugging Face folder that
skn loads like any other, with `planted.json` saying what was planted where.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from skn.errors import ModelError, UsageError
from skn.inputs.layout import Encoded, gather_prompt_rows, make_batch
from skn.models.model import LoadedModel, batch_pad_id
from skn.training.prompt import splice

PLANTED_FILE = "planted.json"
GATE_OFFSET = 3.0  # the gate's input at the mean item: silu is within 2% of linear above it
RIDGE = 1e-2  # ridge of the read direction's regression, relative to the inputs' mean variance


@dataclass(frozen=True)
class Plant:
    """One planted neuron: which, how strongly it reads `feature`, and how strongly it writes."""

    layer: int
    neuron: int
    feature: str  # the name of what it reads (a label NAME==VALUE, `instruction_tokens`, ...), for the record
    read: float  # a in [0, 1]: 0 keeps the neuron's own read, 1 reads only the feature
    write: float  # b >= 0: 0 writes nothing, else b mean column norms along the write token's unembedding
    write_token: int = -1  # the token whose logit the neuron pushes; -1 with write == 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.read <= 1.0:
            raise UsageError(f"plant {self.layer}.{self.neuron}: read strength {self.read} is outside [0, 1]")
        if not self.write >= 0.0 or self.write == float("inf"):
            raise UsageError(f"plant {self.layer}.{self.neuron}: write strength {self.write} must be finite and >= 0")
        if self.write > 0 and self.write_token < 0:
            raise UsageError(f"plant {self.layer}.{self.neuron}: a write strength needs a write token")


@dataclass(frozen=True)
class ReadDirection:
    """Where a feature lives in one layer's FFN input at the prompt slots, under one or more prompts."""

    w: Tensor  # [H] float64, orthogonal to every prompt's mean input
    v: Tensor  # [H] float64, with m_p . v = 1 for every prompt's mean input m_p: an input that is about 1
    sd: float  # spread of h . w over the items, within each prompt
    r: float  # Pearson r of h . w with the feature on the items it was fitted on, within each prompt


def slot_inputs(loaded: LoadedModel, rows: Sequence[Encoded], prompt: Tensor, layer: int, batch_size: int = 32,
                slot: int = -1) -> Tensor:
    """Each item's FFN input at `layer` (the gate projection's input) at prompt slot `slot`, or averaged over
    the slots (-1): [N, H] float64."""
    sites = loaded.sites
    if not sites.gate_modules:
        raise ModelError(f"{loaded.name}: planting needs a gated FFN with separate gate and up projections")
    if not 0 <= layer < sites.num_layers:
        raise UsageError(f"plant: layer {layer} is outside 0..{sites.num_layers - 1}")
    prompt_len = int(prompt.shape[0])
    if slot >= prompt_len:
        raise UsageError(f"plant: slot {slot} is outside the prompt's 0..{prompt_len - 1}")
    captured: list[Tensor] = []
    offsets: list[Tensor] = []

    def hook(module: nn.Module, args: tuple[Tensor, ...]) -> None:
        rows_at = gather_prompt_rows(args[0], offsets[-1], prompt_len).to(torch.float64)
        captured.append((rows_at.mean(dim=1) if slot < 0 else rows_at[:, slot]).cpu())

    handle = sites.gate_modules[layer].register_forward_pre_hook(hook)
    try:
        with torch.no_grad():
            for lo in range(0, len(rows), batch_size):
                batch = make_batch(rows[lo : lo + batch_size], prompt_len, batch_pad_id(loaded), with_completion=False)
                offsets.append(batch.prompt_start)
                embeds = splice(loaded, batch, prompt)
                loaded.model(inputs_embeds=embeds, attention_mask=batch.attention_mask.to(loaded.device), use_cache=False)
    finally:
        handle.remove()
    return torch.cat(captured)


def read_direction(inputs: Tensor, feature: Tensor, ridge: float = RIDGE, groups: Tensor | None = None) -> ReadDirection:
    """The ridge-regression direction of `feature` [N] on `inputs` [N, H] (`ridge` relative to the inputs'
    mean variance). `groups` [N] int64 (default: one group) marks rows measured under different prompts:
    each group is centred on its own mean, `w` is made orthogonal to every group's mean (so h . w has mean 0
    under each prompt) and `v` is the least-norm vector with m_g . v = 1 for every group's mean m_g."""
    x = inputs.to(torch.float64)
    f = feature.to(torch.float64)
    g = torch.zeros(x.shape[0], dtype=torch.int64) if groups is None else groups.to(torch.int64)
    if x.dim() != 2 or f.shape != (x.shape[0],) or g.shape != f.shape:
        raise UsageError(f"plant: inputs {tuple(x.shape)}, feature {tuple(f.shape)} and groups {tuple(g.shape)} do not match")
    if float(f.std()) == 0.0:
        raise UsageError("plant: the feature is constant on these items; nothing to read")
    labels = sorted(set(g.tolist()))
    means = torch.stack([x[g == label].mean(dim=0) for label in labels])  # [G, H]
    centred = x - means[torch.tensor([labels.index(v) for v in g.tolist()])]
    gram = centred.T @ centred
    penalty = ridge * float(gram.diagonal().mean()) + 1e-12
    eye = torch.eye(gram.shape[0], dtype=torch.float64)
    w = torch.linalg.solve(gram + penalty * eye, centred.T @ (f - f.mean()))
    basis, _ = torch.linalg.qr(means.T)  # [H, G]: an orthonormal basis of the means' span
    w = w - basis @ (basis.T @ w)
    v = means.T @ torch.linalg.solve(means @ means.T + 1e-12 * torch.eye(len(labels), dtype=torch.float64),
                                     torch.ones(len(labels), dtype=torch.float64))
    z = centred @ w
    sd = float(z.std())
    if sd == 0.0:
        raise UsageError("plant: no direction of these inputs varies with the feature")
    r = float(torch.corrcoef(torch.stack([z, f]))[0, 1])
    return ReadDirection(w, v, sd, r)


def _projections(loaded: LoadedModel, spec: Plant) -> tuple[nn.Linear, nn.Linear, nn.Linear]:
    """The layer's gate, up and down projections, each an nn.Linear."""
    sites = loaded.sites
    modules = (sites.gate_modules[spec.layer], sites.up_modules[spec.layer], sites.modules[spec.layer])
    gate, up, down = modules
    if not (isinstance(gate, nn.Linear) and isinstance(up, nn.Linear) and isinstance(down, nn.Linear)):
        raise ModelError(f"{loaded.name}: planting needs nn.Linear gate, up and down projections")
    if not 0 <= spec.neuron < sites.width:
        raise UsageError(f"plant: neuron {spec.neuron} is outside 0..{sites.width - 1}")
    return gate, up, down


@torch.no_grad()
def plant(loaded: LoadedModel, spec: Plant, direction: ReadDirection) -> None:
    """Set one neuron's gate and up rows and its down column in place (see the module's docstring)."""
    gate, up, down = _projections(loaded, spec)
    v = direction.v
    gate_row = direction.w / direction.sd + GATE_OFFSET * v
    a = spec.read
    for weight, row in ((gate.weight, gate_row), (up.weight, v)):  # [m, H]
        old = weight[spec.neuron].to(torch.float64)
        scaled = row.to(old.device) * (old.norm() / row.norm())  # the neuron's own row norm: a is a share of it
        weight[spec.neuron] = ((1 - a) * old + a * scaled).to(weight.dtype)
    down_weight = down.weight  # [H, m]
    if spec.write == 0:
        down_weight[:, spec.neuron] = 0
        return
    output = loaded.model.get_output_embeddings()  # type: ignore[operator]
    if not isinstance(output, nn.Linear):
        raise ModelError(f"{loaded.name}: planting a write needs a linear output head")
    if not 0 <= spec.write_token < int(output.weight.shape[0]):
        raise UsageError(f"plant: write token {spec.write_token} is outside the vocabulary")
    toward = output.weight[spec.write_token].to(torch.float64)
    scale = float(down_weight.to(torch.float64).norm(dim=0).mean())
    down_weight[:, spec.neuron] = (spec.write * scale * toward / toward.norm()).to(down_weight.dtype)


@contextmanager
def planted(loaded: LoadedModel, spec: Plant, direction: ReadDirection) -> Iterator[None]:
    """`plant` inside the block; the layer's own gate, up and down weights back after it."""
    modules = _projections(loaded, spec)
    saved = [m.weight.detach().clone() for m in modules]
    try:
        plant(loaded, spec, direction)
        yield
    finally:
        with torch.no_grad():
            for module, weight in zip(modules, saved):
                module.weight.copy_(weight)


def write_planted(loaded: LoadedModel, out: Path, plants: Sequence[Plant], record: dict[str, object]) -> Path:
    """Save the planted model as a Hugging Face folder with `planted.json` (the plants and `record`)."""
    out.mkdir(parents=True, exist_ok=True)
    loaded.model.save_pretrained(out)  # type: ignore[operator]
    loaded.tokenizer.save_pretrained(out)  # type: ignore[attr-defined]
    body = {"base_model": loaded.name, "plants": [asdict(p) for p in plants], **record}
    (out / PLANTED_FILE).write_text(json.dumps(body, indent=2) + "\n")
    return out


def read_planted(folder: Path) -> tuple[Plant, ...]:
    """The plants a planted folder records."""
    path = folder / PLANTED_FILE
    if not path.is_file():
        raise UsageError(f"{folder}: no {PLANTED_FILE}; not a planted model")
    body = json.loads(path.read_text())
    return tuple(Plant(**p) for p in body["plants"])


__all__ = [
    "GATE_OFFSET", "PLANTED_FILE", "Plant", "ReadDirection", "plant", "planted", "read_direction",
    "read_planted", "slot_inputs", "write_planted",
]
