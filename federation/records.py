"""The global model as it travels and is stored: one type, one way to pack it into named arrays.

A model crosses the wire (hub -> site, site -> hub) and lands in checkpoints as a flat float32
vector (codec.flatten's layout) plus its integer entries (BatchNorm counters), which travel as they
are under the `int:` prefix. Every place that packs or unpacks a model goes through here, and
`GlobalModel.load_into` is the one place a model's state is rebuilt from them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from flwr.app import Array, ArrayRecord

from federation import codec

INT_PREFIX = "int:"


@dataclass
class GlobalModel:
    """A model's float entries as one vector (`codec.Layout` order) and its integer entries by name."""

    vector: np.ndarray
    ints: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def of(cls, model: torch.nn.Module, layout: codec.Layout) -> GlobalModel:
        """The current state of `model`."""
        state = model.state_dict()
        return cls(codec.flatten(state, layout), codec.integer_entries(state))

    def copy(self) -> GlobalModel:
        return GlobalModel(self.vector.copy(), dict(self.ints))

    def with_ints(self, ints: dict[str, np.ndarray]) -> GlobalModel:
        """The same vector with `ints` over this model's integer entries."""
        return GlobalModel(self.vector, {**self.ints, **ints})

    def load_into(self, model: torch.nn.Module, layout: codec.Layout, extra: dict | None = None) -> None:
        """Put this model's entries (then `extra`'s, e.g. a site's own normalisation) into `model`."""
        state = dict(model.state_dict())
        state.update(codec.unflatten(self.vector, layout))
        state.update({name: torch.from_numpy(np.array(value)) for name, value in self.ints.items()})
        state.update(extra or {})
        model.load_state_dict(state)


def pack(arrays: dict[str, np.ndarray], ints: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`arrays` and the integer entries under their prefix, in one flat mapping."""
    return {**arrays, **{f"{INT_PREFIX}{k}": v for k, v in ints.items()}}


def unpack(named: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Inverse of `pack`: (the other arrays, the integer entries)."""
    arrays = {k: v for k, v in named.items() if not k.startswith(INT_PREFIX)}
    ints = {k[len(INT_PREFIX) :]: v for k, v in named.items() if k.startswith(INT_PREFIX)}
    return arrays, ints


def to_record(arrays: dict[str, np.ndarray], ints: dict[str, np.ndarray] | None = None) -> ArrayRecord:
    """A Flower ArrayRecord of `arrays` and (prefixed) integer entries."""
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in pack(arrays, ints or {}).items()})


def from_record(record: ArrayRecord) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Inverse of `to_record`."""
    return unpack({k: v.numpy() for k, v in record.items()})


def model_record(model: GlobalModel) -> ArrayRecord:
    """The model as an instruction carries it."""
    return to_record({"vector": np.asarray(model.vector, dtype=np.float32)}, model.ints)


def read_model(record: ArrayRecord) -> GlobalModel:
    """Inverse of `model_record`."""
    arrays, ints = from_record(record)
    return GlobalModel(arrays["vector"], ints)
