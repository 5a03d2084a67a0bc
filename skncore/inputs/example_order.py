"""Orders that follow the examples' content, never their place in the file.

Two things in a probe depend on how the examples are arranged:

- the holdout's folds (skn.statistics.folds.assign_folds), and
- the probe pass's batches. With a metric known only after each batch (loss, confidence, ...) the
  permutation null permutes within each batch (skn.statistics.null), so a file sorted by a group (the bundled items
  come sorted by digit count) puts one group in each batch: the null then keeps the group's effect in every
  permutation, its threshold rises and nothing passes. The same rows shuffled gave 839 passing neurons
  where the sorted file gave 18 (issue #32).

Both are keyed on each example's text: sha256 over a seed, a salt naming the use, the instruction and the
completion. Never on its other fields: one of them may be the metric, and an order (or a fold) chosen by
the metric would break the null's exchangeability (and the holdout's independence). The pass takes the
examples in the order of their keys (`pass_order`), so its batches are a seeded shuffle, and the same
examples in any file order give the same batches, folds, permutations and numbers; every output (metric,
activations, folds) is put back in the file's order. The k-th repeat of a text is keyed with k, so
repeats spread out like distinct examples; which repeat carries which fields then follows the file's order,
the one thing a reordering can change.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

from skn.inputs.data import Example

PASS_SALT = "pass-order"
FOLD_SALT = "fold"
ORDER_NAME = "content-keyed shuffle"  # what run.json says of the pass's batches


def content_key(seed: int, salt: str, example: Example, occurrence: int = 0) -> bytes:
    """sha256 of the seed, the salt, the example's instruction and completion (never its fields) and which
    occurrence of that text it is (0 for the first)."""
    text = json.dumps([seed, salt, example.instruction, example.completion, occurrence], ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def keyed_order(examples: Sequence[Example], seed: int, salt: str) -> tuple[int, ...]:
    """The indices of `examples` sorted by their content keys. Repeats of one text get keys of their own
    (by occurrence), so they spread over batches and folds like any other examples rather than sitting
    together (rows of one text have the same activations: a batch of them would leave the null nothing
    to permute)."""
    seen: dict[tuple[str, str], int] = {}
    keys = []
    for example in examples:
        text = (example.instruction, example.completion)
        occurrence = seen.get(text, 0)
        seen[text] = occurrence + 1
        keys.append(content_key(seed, salt, example, occurrence))
    return tuple(sorted(range(len(examples)), key=lambda i: (keys[i], i)))


def pass_order(examples: Sequence[Example], seed: int) -> tuple[int, ...]:
    """The order the probe pass takes the examples in: position j of the pass holds example order[j]."""
    return keyed_order(examples, seed, PASS_SALT)


def inverse(order: Sequence[int]) -> tuple[int, ...]:
    """inverse[i] = the position of example i in `order`."""
    out = [0] * len(order)
    for position, index in enumerate(order):
        out[index] = position
    return tuple(out)


__all__ = ["FOLD_SALT", "ORDER_NAME", "PASS_SALT", "content_key", "inverse", "keyed_order", "pass_order"]
