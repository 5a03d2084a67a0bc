"""The features a probe runs with, in the order their columns stand in neurons.json and neurons.csv (after the
rank, layer, neuron, position and r every run has). A new feature is a module in this folder and a line here."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from skn.errors import UsageError

from skn.features.control import ControlFeature
from skn.features.feature import Feature
from skn.features.holdout import HoldoutFeature
from skn.features.null import NullFeature
from skn.features.predictivity import PredictivityFeature

FEATURES: tuple[Feature[Any], ...] = (ControlFeature(), NullFeature(), HoldoutFeature(), PredictivityFeature())


def checked(features: Sequence[Feature[Any]]) -> tuple[Feature[Any], ...]:
    """`features` as a tuple, each name (its key in ProbeResult.sections and run.json) and column used once."""
    names = [feature.name for feature in features]
    columns = [column for feature in features for column in feature.columns]
    for what, values in (("name", names), ("column", columns)):
        twice = sorted({v for v in values if values.count(v) > 1})
        if twice:
            raise UsageError(f"features: the {what} {', '.join(twice)} is used by more than one feature")
    return tuple(features)

__all__ = ["FEATURES", "checked"]
