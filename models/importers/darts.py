"""Import Darts ``RNNModel`` and ``BlockRNNModel`` (LSTM, GRU) from what ``model.save``
writes: ``model.pt`` (a pickle of the Python object, without weights) and the Lightning
checkpoint ``model.pt.ckpt`` beside it (weights and hyper-parameters). Both are read with
inert stand-ins for every class they name (:mod:`models.importers.checkpoint`); Darts,
Lightning and pandas need not be installed.

Darts re-runs the last ``input_chunk_length`` observations from a zero state on every
predict, so both import as ``window:W`` models:

- ``RNNModel`` is recursive: a linear layer ``V`` on the last output gives the next step,
  fed back with the carried state; its input at t is the target at t and the future
  covariates at t+1 (``covariate_lead``).
- ``BlockRNNModel`` (Darts >= 0.38) applies its ``fc`` block to each of the last
  ``output_chunk_length`` outputs joined with that step's future covariates
  (``head_steps``); older versions read the last hidden state (a plain last-step head,
  told apart by the shapes).

Window rows are ``[targets, past covariates, future covariates]`` as observed, in the
order of the series Darts was given; their names are not stored, so they are taken by
position. Likelihood heads forecast their point value: Gaussian mu, the quantile median.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from statecast.models.errors import ImportFailed
from statecast.models.importers.checkpoint import StandIn, class_name, load_checkpoint
from statecast.models.importers.common import Imported, linear_stack, torch_activation
from statecast.models.importers.pytorch import _layer_keys, _recurrent_layers, _to_numpy
from statecast.models.layer_spec import ActivationSpec, DenseLayerSpec
from statecast.models.spec import ModelSpec, OutputSpec


def is_darts_file(path: Path) -> bool:
    """``model.pt`` with a ``model.pt.ckpt`` beside it, or any ``.ckpt`` (a Lightning
    checkpoint: :func:`import_darts` refuses those that are not Darts', naming why)."""
    return path.suffix == ".ckpt" or Path(f"{path}.ckpt").is_file()


def _checkpoint_paths(path: Path) -> tuple[Path, Path | None]:
    """(the Lightning checkpoint, the model.pt beside it if any)."""
    if path.suffix == ".ckpt":
        pickled = path.with_suffix("")
        return path, pickled if pickled.is_file() else None
    ckpt = Path(f"{path}.ckpt")
    if not ckpt.is_file():
        raise ImportFailed(f"{path.name} holds no weights: Darts writes them to {ckpt.name} "
                           "beside it when a fitted (or predicted-with) model is saved")
    return ckpt, path


def _sample_shapes(hp: dict[str, Any]) -> dict[str, Any]:
    """``train_sample_shape`` by field (a dict since Darts 0.48, a list of 6 before)."""
    shapes = hp.get("train_sample_shape")
    if isinstance(shapes, dict):
        return shapes
    if isinstance(shapes, (list, tuple)) and len(shapes) >= 5:
        return dict(zip(("past_target", "past_covariates", "historic_future_covariates",
                         "future_covariates", "static_covariates", "future_target"),
                        shapes, strict=False))
    raise ImportFailed("the checkpoint has no train_sample_shape: not a Darts checkpoint")


def _width(shape: Any) -> int:
    return int(shape[-1]) if shape is not None else 0


def _output(likelihood: Any, params: int) -> OutputSpec:
    if likelihood is None:
        return OutputSpec()
    name = (class_name(likelihood) or type(likelihood).__name__).rsplit(".", 1)[-1]
    if name == "GaussianLikelihood":
        return OutputSpec("gaussian", 2, 0)
    if name == "QuantileRegression":
        quantiles = likelihood.field("quantiles") if isinstance(likelihood, StandIn) else None
        if not quantiles or 0.5 not in quantiles or len(quantiles) != params:
            raise ImportFailed("a QuantileRegression likelihood whose quantiles cannot be read"
                               " (or lack the median 0.5)")
        return OutputSpec("quantile", len(quantiles), list(quantiles).index(0.5),
                          tuple(float(q) for q in quantiles))
    raise ImportFailed(f"likelihood {name} is not supported: statecast reads Gaussian and "
                       "quantile heads (and none)")


def _check_pickled_model(pickled: Path | None) -> None:
    """Refuse models whose covariates Darts makes itself at predict time (encoders)."""
    if pickled is None:
        return
    model = load_checkpoint(pickled)
    if isinstance(model, StandIn) and model.field("add_encoders") not in (None, {}):
        raise ImportFailed(f"{pickled.name}: add_encoders makes covariates inside Darts at "
                           "predict time; statecast takes covariates from the request only")


def _fc_head(state: dict[str, np.ndarray], activation: Any
             ) -> tuple[list[DenseLayerSpec], dict[str, np.ndarray]]:
    modules = sorted({int(key.split(".")[1]) for key in state if key.startswith("fc.")})
    if not modules:
        raise ImportFailed("the BlockRNNModel checkpoint has no fc layers")
    between = (torch_activation(str(activation), "fc activation") if activation
               else ActivationSpec.of("linear"))
    return linear_stack(state, [f"fc.{module}" for module in modules], between)


def import_darts(path: str | Path) -> Imported:
    """Import a Darts ``RNNModel``/``BlockRNNModel`` from ``model.pt`` or its ``.ckpt``."""
    path = Path(path)
    if not path.is_file():
        raise ImportFailed(f"no file {path}")
    ckpt_path, pickled = _checkpoint_paths(path)
    checkpoint = load_checkpoint(ckpt_path)
    if not isinstance(checkpoint, dict) or not isinstance(
            checkpoint.get("hyper_parameters"), dict) or "state_dict" not in checkpoint:
        raise ImportFailed(f"{ckpt_path.name} is not a Lightning checkpoint")
    hp = checkpoint["hyper_parameters"]
    if "h" in hp and "input_chunk_length" not in hp:
        raise ImportFailed(f"{ckpt_path.name} is a NeuralForecast checkpoint from before 3.3: "
                           "convert it with python -m neuralforecast.migrate, or save the "
                           "model with NeuralForecast 3.3, and import the .safetensors file")
    if "input_chunk_length" not in hp or "hidden_dim" not in hp:
        raise ImportFailed(f"{ckpt_path.name} is not a Darts RNNModel/BlockRNNModel "
                           "checkpoint (no input_chunk_length/hidden_dim)")
    cell = str(hp.get("name", ""))
    if cell not in ("LSTM", "GRU"):
        raise ImportFailed(f"Darts {cell or 'custom'} RNN module is not supported: statecast "
                           "runs LSTM and GRU cells")
    if hp.get("use_reversible_instance_norm"):
        raise ImportFailed("use_reversible_instance_norm (RINorm) is not supported yet")
    if int(hp.get("output_chunk_shift", 0) or 0):
        raise ImportFailed("output_chunk_shift > 0 is not supported")
    _check_pickled_model(pickled)
    state = _to_numpy(checkpoint["state_dict"])
    shapes = _sample_shapes(hp)
    n_targets = int(hp.get("target_size", _width(shapes.get("past_target"))))
    n_past = _width(shapes.get("past_covariates"))
    n_future = _width(shapes.get("historic_future_covariates"))
    if shapes.get("static_covariates") is not None:
        raise ImportFailed("static covariates are not supported yet")
    window = int(hp["input_chunk_length"])
    horizon = int(hp.get("output_chunk_length", 1))
    params = int(hp.get("nr_params", 1))
    output = _output(hp.get("likelihood"), params)
    layers, tensors = _recurrent_layers(state, _layer_keys(["rnn."], False, state),
                                        cell.lower())
    extra = set(state) - {k for k in state if k.startswith(("rnn.", "V.", "fc."))}
    if extra:
        raise ImportFailed(f"tensors {sorted(extra)[:6]} are not part of an RNNModel or "
                           "BlockRNNModel statecast reproduces (up_sampler: "
                           "output_chunk_length > input_chunk_length)")
    targets = ("y",) if n_targets == 1 else tuple(f"y{i}" for i in range(n_targets))
    past = tuple(f"past_{i + 1}" for i in range(n_past))
    future = tuple(f"future_{i + 1}" for i in range(n_future))
    if layers[0].input_size != n_targets + n_past + n_future:
        raise ImportFailed(f"the RNN reads {layers[0].input_size} features; the checkpoint "
                           f"records {n_targets} target(s), {n_past} past and {n_future} "
                           "future covariate(s)")
    common: dict[str, Any] = {
        "input_size": layers[0].input_size, "layers": tuple(layers),
        "features": targets + past + future, "targets": targets,
        "state_mode": f"window:{window}", "output": output,
        "extra": {"covariates": "by_position"}}
    if "V.weight" in state:
        kind = "RNNModel"
        head = [DenseLayerSpec(int(state["V.weight"].shape[1]), int(state["V.weight"].shape[0]))]
        tensors["head.0.weight"] = np.ascontiguousarray(state["V.weight"].T)
        tensors["head.0.bias"] = state.get("V.bias", np.zeros(head[0].out_features, np.float32))
        spec_args: dict[str, Any] = dict(
            head=tuple(head), head_every_step=True, forecast_mode="recursive", horizon=1,
            future_features=future, covariate_lead=bool(future))
    else:
        head, head_tensors = _fc_head(state, hp.get("activation"))
        tensors.update(head_tensors)
        kind = "BlockRNNModel"
        if "future_cov_dim" in hp:  # Darts >= 0.38: the fc block on each of the last steps
            spec_args = dict(head=tuple(head), forecast_mode="direct", horizon=horizon,
                             head_steps=horizon, future_features=future)
        else:  # older: the fc block on the last hidden state, all steps at once
            spec_args = dict(head=tuple(head), forecast_mode="direct", horizon=horizon)
    try:
        spec = ModelSpec(**common, **spec_args)
    except ValueError as error:
        raise ImportFailed(f"the {kind} checkpoint does not fit together: {error}") from None
    digest = hashlib.sha256(ckpt_path.read_bytes()).hexdigest()
    return Imported(spec, tensors, {
        "framework": "darts", "class": kind, "file": ckpt_path.name, "sha256": digest,
        "dtype": str(checkpoint.get("model_dtype", "")),
        "outputs": (f"{kind} ({cell}), window {window}: "
                    + ("recursive, one step at a time" if kind == "RNNModel" else
                       f"direct, {horizon} steps") +
                    (f"; point value of its {output.kind} head" if output.kind != "point"
                     else "") +
                    f"; window rows [{', '.join(common['features'])}] by position")})
