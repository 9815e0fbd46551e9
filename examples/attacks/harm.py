"""What an attack achieved: the harm figure of a scorecard row.

The lab measures harm by mounting an attack again with the checks that
caught it switched off, letting it reach a released model, and comparing
that model with one trained on the same world without the attack (or the
same model on clean and attacked inputs). Harm is a paired difference over
the same cases (users, lesion studies) with a one-sided lower bound: an
attack is harmful when the least effect the evidence supports is above zero,
so two trainings' chance differences do not count as harm.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from assets.promotion import load_champion
from domain.distribution import paired_drop_lower_bound
from examples.runs import PipelineInstance
from resources.loader import LoadedModel


@dataclass(frozen=True)
class Effect:
    """An attack's effect as a share of the cases measured, with the least share the evidence supports."""

    value: float
    lower_bound: float
    cases: int

    @property
    def harmful(self) -> bool:
        return self.lower_bound > 0


@dataclass(frozen=True)
class HarmProbe:
    """How to measure what an attack achieved once it reached a released model.

    `effect(attacked, clean)` compares the attacked instance with `clean`: the
    same world, prepared the same way, run through `counterpart` without the
    attack (None when the probe has no `counterpart`).
    """

    measure: str  # what the figure is, in words
    effect: Callable[[PipelineInstance, PipelineInstance | None], Effect]
    counterpart: Callable[[PipelineInstance], object] | None = None


def paired_effect(name: str, good_before: np.ndarray, good_after: np.ndarray) -> Effect:
    """The share of cases the attack turned from good to bad (net of the reverse), over the same cases.

    `good_before[i]` and `good_after[i]` say whether case i went right (a
    lesion found, a user not shown the pushed item) without and with the attack.
    """
    before, after = np.asarray(good_before, bool), np.asarray(good_after, bool)
    if before.shape != after.shape or before.size == 0:
        raise ValueError(
            f"{name}: need one verdict per case before and after, got {before.shape}, {after.shape}"
        )
    lost, gained = int(np.sum(before & ~after)), int(np.sum(~before & after))
    return Effect(
        value=(lost - gained) / before.size,
        lower_bound=paired_drop_lower_bound(name, lost, gained, before.size),
        cases=int(before.size),
    )


def released_model(instance: PipelineInstance, model_name: str, architectures: dict) -> LoadedModel:
    """The model `instance` released, loaded as its servers would (signature, digests, trust store)."""
    model = load_champion(instance.defs.resources["releases"], instance.trust, model_name, architectures)
    if model is None:
        raise ValueError(f"no {model_name} was released: there is nothing to measure harm on")
    return model
