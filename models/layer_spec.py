"""The layers of a model spec: recurrent layers, dense head layers and their activations,
each with its JSON form."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from statecast.kernels.activations import ACTIVATIONS
from statecast.models.errors import InvalidSpec

CELLS = ("lstm", "gru")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise InvalidSpec(message)


@dataclass(frozen=True)
class ActivationSpec:
    """An activation by name with its two parameters (ONNX's alpha and beta)."""

    name: str
    alpha: float = 0.0
    beta: float = 0.0

    @classmethod
    def of(cls, name: str, alpha: float | None = None, beta: float | None = None
           ) -> ActivationSpec:
        """The activation ``name`` with its defaults for parameters not given."""
        _require(name in ACTIVATIONS, f"unknown activation {name!r}; known: {sorted(ACTIVATIONS)}")
        _, default_alpha, default_beta = ACTIVATIONS[name]
        return cls(name, float(default_alpha if alpha is None else alpha),
                   float(default_beta if beta is None else beta))

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "alpha": self.alpha, "beta": self.beta}

    @classmethod
    def from_json(cls, data: Any) -> ActivationSpec:
        if isinstance(data, str):
            return cls.of(data)
        _require(isinstance(data, dict) and "name" in data, f"bad activation {data!r}")
        return cls.of(data["name"], data.get("alpha"), data.get("beta"))


SIGMOID = ActivationSpec.of("sigmoid")
TANH = ActivationSpec.of("tanh")
LINEAR = ActivationSpec.of("linear")


@dataclass(frozen=True)
class RecurrentLayerSpec:
    """One LSTM or GRU layer.

    ``gate_activation`` is Keras' ``recurrent_activation`` (ONNX f), ``cell_activation`` the
    candidate's (ONNX g), ``hidden_activation`` the one on the cell state before the output
    gate (ONNX h; LSTM only). ``proj_size`` > 0 is PyTorch's LSTM projection. ``reset_after``
    is GRU only; ``peepholes``, ``clip`` and ``input_forget`` are ONNX LSTM features.
    """

    cell: str
    input_size: int
    hidden_size: int
    proj_size: int = 0
    gate_activation: ActivationSpec = SIGMOID
    cell_activation: ActivationSpec = TANH
    hidden_activation: ActivationSpec = TANH
    reset_after: bool = True
    peepholes: bool = False
    clip: float = 0.0
    input_forget: bool = False

    @property
    def gates(self) -> int:
        return 4 if self.cell == "lstm" else 3

    @property
    def output_size(self) -> int:
        """Width of the layer's h: proj_size when projected, else hidden_size."""
        return self.proj_size or self.hidden_size

    def validate(self, index: int) -> None:
        where = f"layer {index}"
        _require(self.cell in CELLS, f"{where}: cell must be one of {CELLS}, got {self.cell!r}")
        _require(self.input_size >= 1 and self.hidden_size >= 1,
                 f"{where}: input_size and hidden_size must be >= 1")
        _require(self.proj_size >= 0, f"{where}: proj_size must be >= 0")
        _require(self.cell == "lstm" or not (self.proj_size or self.peepholes or
                                             self.input_forget),
                 f"{where}: proj_size, peepholes and input_forget are LSTM only")
        _require(self.proj_size < self.hidden_size or self.proj_size == 0,
                 f"{where}: proj_size must be smaller than hidden_size (as in PyTorch)")
        _require(math.isfinite(self.clip) and self.clip >= 0, f"{where}: clip must be >= 0")

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "cell": self.cell, "input_size": self.input_size, "hidden_size": self.hidden_size,
            "gate_activation": self.gate_activation.to_json(),
            "cell_activation": self.cell_activation.to_json()}
        if self.cell == "lstm":
            data.update(proj_size=self.proj_size,
                        hidden_activation=self.hidden_activation.to_json(),
                        peepholes=self.peepholes, input_forget=self.input_forget)
        else:
            data["reset_after"] = self.reset_after
        data["clip"] = self.clip
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RecurrentLayerSpec:
        try:
            return cls(
                cell=str(data["cell"]), input_size=int(data["input_size"]),
                hidden_size=int(data["hidden_size"]), proj_size=int(data.get("proj_size", 0)),
                gate_activation=ActivationSpec.from_json(data.get("gate_activation", "sigmoid")),
                cell_activation=ActivationSpec.from_json(data.get("cell_activation", "tanh")),
                hidden_activation=ActivationSpec.from_json(
                    data.get("hidden_activation", "tanh")),
                reset_after=bool(data.get("reset_after", True)),
                peepholes=bool(data.get("peepholes", False)),
                clip=float(data.get("clip", 0.0)),
                input_forget=bool(data.get("input_forget", False)))
        except (KeyError, TypeError, ValueError) as error:
            raise InvalidSpec(f"bad recurrent layer {data!r}: {error}") from None


@dataclass(frozen=True)
class DenseLayerSpec:
    """One dense layer of the head: ``out = activation(in @ weight + bias)``."""

    in_features: int
    out_features: int
    activation: ActivationSpec = LINEAR

    def to_json(self) -> dict[str, Any]:
        return {"in_features": self.in_features, "out_features": self.out_features,
                "activation": self.activation.to_json()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DenseLayerSpec:
        try:
            return cls(int(data["in_features"]), int(data["out_features"]),
                       ActivationSpec.from_json(data.get("activation", "linear")))
        except (KeyError, TypeError, ValueError) as error:
            raise InvalidSpec(f"bad dense layer {data!r}: {error}") from None
