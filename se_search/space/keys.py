"""The names of what a space's settings train: the keys of cached checkpoints (a pretrained
backbone, a supernet) and of stand-alone trainings (which ``verify`` copies between studies).

One rule for every key: hash only the settings that change what is learned, and each only
where it differs from its default. So a new setting, or one that shapes nothing learned (the
device, early stopping, how many seeds, where the data lies), leaves every key as it was,
and a cache survives an upgrade that adds options. Changing the *default* of a setting that
shapes what is learned must bump :data:`KEY_VERSION`, which every key hashes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from se_search.space.specs import SearchSpace

__all__ = ["KEYS", "KEY_VERSION", "LEARNED", "digest", "learned_key"]

#: Bump when the default of a setting in :data:`LEARNED` or :data:`KEYS` changes.
KEY_VERSION = 1

#: A selection of a section's fields: a field name, or a nested section's own selection.
Fields = Mapping[str, "Fields | None"]

#: What every training learns from: the network, the data and its split, the optimiser.
LEARNED: dict[str, Fields] = {
    "backbone": dict.fromkeys(("model", "source", "num_classes", "weights")),
    "data": dict.fromkeys(
        ("dataset", "image_size", "batch_size", "val_fraction", "train_size", "augment")
    ),
    "evaluation": dict.fromkeys(
        ("lr", "momentum", "weight_decay", "zero_init_residual", "average", "average_span")
    ),
}

#: Each kind of key: the settings it hashes on top of :data:`LEARNED`.
KEYS: dict[str, Fields] = {
    # backbone.weights: self, pretrained on the data set for pretrain_epochs
    "backbone": {"evaluation": dict.fromkeys(("pretrain_epochs",))},
    # the oneshot supernet: every option of the space, trained together (a few-shot split's
    # copies add their own settings to their file names)
    "supernet": {
        "sites": None,
        "choices": None,
        "evaluation": {
            "supernet": dict.fromkeys(
                ("epochs", "sampling", "random_per_step", "se_weights", "distill")
            ),
        },
    },
    # one candidate trained stand-alone under a seed, for epochs (each record carries both)
    "training": {"evaluation": dict.fromkeys(("strategy", "pretrain_epochs"))},
}


def digest(shape: Any) -> str:
    """16 hex digits of SHA-256 over ``shape``'s canonical JSON (keys sorted): the name of
    what a set of settings produces (a supernet, a pretrained backbone, a training)."""
    return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:16]


def _merged(a: Fields, b: Fields) -> dict[str, Any]:
    out: dict[str, Any] = dict(a)
    for name, sub in b.items():
        mine = out.get(name)
        if isinstance(mine, Mapping) and isinstance(sub, Mapping):
            out[name] = _merged(mine, sub)
        else:
            out[name] = sub
    return out


_NO_DEFAULT = object()


def _changed(value: BaseModel, default: BaseModel | None, fields: Fields | None) -> dict:
    """``value``'s fields (only ``fields``; all: None) that differ from ``default``'s (all of
    them when there is no default), nested sections likewise."""
    shown = {}
    for name, sub in (fields or dict.fromkeys(type(value).model_fields)).items():
        mine = getattr(value, name)
        theirs = _NO_DEFAULT if default is None else getattr(default, name)
        if isinstance(mine, BaseModel):
            nested = _changed(mine, theirs if isinstance(theirs, BaseModel) else None, sub)
            if nested:
                shown[name] = nested
        elif theirs is _NO_DEFAULT or mine != theirs:
            shown[name] = mine
    return shown


def _default(section: BaseModel) -> BaseModel | None:
    try:
        return type(section)()
    except ValueError:  # a section with required fields (backbone.model): all of it counts
        return None


def learned_key(space: SearchSpace, kind: str) -> str:
    """The key of what ``space`` trains as ``kind`` (one of :data:`KEYS`): a digest of the
    settings that shape it, each where it is not the default, with ``search.seed`` (which
    fixes the data split and, for a checkpoint, its initial weights)."""
    shape: dict[str, Any] = {"kind": kind, "version": KEY_VERSION, "seed": space.search.seed}
    for section, fields in _merged(LEARNED, KEYS[kind]).items():
        value = getattr(space, section)
        shape[section] = (
            _changed(value, _default(value), fields) if isinstance(value, BaseModel) else value
        )
    return digest(shape)
