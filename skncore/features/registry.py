"""The features a probe runs with, in the order their columns stand in neurons.json and neurons.csv (after the
rank, layer, neuron, position and r every run has). A new feature is a module in this folder and a line here."""

from __future__ import annotations

from typing import Any

from skn.features.control import ControlFeature
from skn.features.feature import Feature
from skn.features.holdout import HoldoutFeature
from skn.features.null import NullFeature
from skn.features.predictivity import PredictivityFeature

FEATURES: tuple[Feature[Any], ...] = (ControlFeature(), NullFeature(), HoldoutFeature(), PredictivityFeature())

__all__ = ["FEATURES"]
