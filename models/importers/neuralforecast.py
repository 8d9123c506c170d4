"""Import NeuralForecast ``LSTM`` and ``GRU`` models from the file ``NeuralForecast.save``
writes per model (3.3: ``LSTM_0.safetensors``, the hyper-parameters as JSON in its
metadata). Read with ``safetensors`` alone: NeuralForecast need not be installed.

NeuralForecast predicts from the last ``input_size`` observations (``inference_input_size
+ 1`` for ``recurrent=True``) from a zero state, each window normalised by its own
statistics (``scaler_type``), so these import as ``window:W`` models with a window scaler:

- direct models apply the MLP decoder to each of the last ``h`` encoder outputs joined with
  that step's future exogenous values (``head_steps``);
- ``recurrent=True`` models feed their scaled one-step forecast back with the carried state
  (LSTM: the projected hidden state is the forecast; GRU: a linear ``proj``); their
  exogenous inputs lead the target by one step, historic ones being 0 ahead.

Window rows are ``[y, hist_exog..., futr_exog...]`` in the model's list order (the names
are in the file). ``MQLoss`` models forecast the median (direct) or, as the library does,
the mean of the quantile outputs (recurrent).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from statecast.models.errors import ImportFailed
from statecast.models.importers.common import Imported, linear_stack, torch_activation
from statecast.models.importers.pytorch import _layer_keys, _recurrent_layers, _to_numpy
from statecast.models.layer_spec import DenseLayerSpec
from statecast.models.spec import WINDOW_SCALERS, ModelSpec, OutputSpec, WindowScalerSpec

_MODELS = {"LSTM": "lstm", "GRU": "gru"}
_POINT_LOSSES = {"MAE", "MSE", "RMSE", "MAPE", "SMAPE", "MASE", "RMSSE", "HuberLoss",
                 "TukeyLoss", "QuantileLoss"}


def read_nf_file(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]] | None:
    """Tensors and metadata of a NeuralForecast model file, or None when ``path`` is
    another kind of safetensors file."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "numpy") as handle:
            metadata = handle.metadata() or {}
            if "hyper_parameters" not in metadata or "model_class" not in metadata:
                return None
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError) as error:
        raise ImportFailed(f"{path}: {error}") from None
    return tensors, metadata


def _loss(hp: dict[str, Any], tensors: dict[str, np.ndarray], recurrent: bool
          ) -> OutputSpec:
    loss = hp.get("loss") or {}
    name = loss.get("cls") if isinstance(loss, dict) else None
    if name in _POINT_LOSSES:
        return OutputSpec()
    if name == "MQLoss":
        values = tensors.get("__hparams__.loss.state.quantiles", tensors.get("loss.quantiles"))
        if values is None:
            raise ImportFailed("an MQLoss model without its quantiles tensor")
        quantiles = tuple(float(q) for q in np.asarray(values, np.float64).reshape(-1))
        if recurrent:  # the library feeds back, and reports, the mean of the outputs
            return OutputSpec("quantile", len(quantiles), -1, quantiles)
        median = [i for i, q in enumerate(quantiles) if abs(q - 0.5) < 1e-6]
        if not median:
            raise ImportFailed(f"MQLoss quantiles {quantiles} have no median to forecast")
        return OutputSpec("quantile", len(quantiles), median[0], quantiles)
    raise ImportFailed(f"loss {name!r} is not supported: statecast reproduces point losses "
                       f"({', '.join(sorted(_POINT_LOSSES))}) and MQLoss; DistributionLoss "
                       "forecasts are Monte-Carlo means of samples")


def _check_configuration(path: Path) -> None:
    """Refuse a model saved with a NeuralForecast-level local scaler (fitted on the whole
    training frame, outside the model file)."""
    config = path.parent / "configuration.json"
    if not config.is_file():
        return
    try:
        data = json.loads(config.read_text(encoding="utf-8")).get("configuration", {})
    except (OSError, ValueError, AttributeError):
        return
    if isinstance(data, dict) and data.get("local_scaler_type"):
        raise ImportFailed(f"the NeuralForecast object was saved with local_scaler_type="
                           f"{data['local_scaler_type']!r}, fitted per series outside the "
                           "model: not supported")


def _sizes(hp: dict[str, Any], recurrent: bool) -> tuple[int, int]:
    """(h, window rows) as NeuralForecast derives them from the saved values."""
    h = int(hp["h"])
    input_size = int(hp.get("input_size", -1))
    input_size = 3 * h if input_size < 1 else input_size
    if not recurrent:
        return h, input_size
    inference = hp.get("inference_input_size")
    inference = input_size if inference is None or int(inference) < 1 else int(inference)
    return h, inference + 1


def _decoder(state: dict[str, np.ndarray], activation: str | None
             ) -> tuple[list[DenseLayerSpec], dict[str, np.ndarray]]:
    modules = sorted({int(k.split(".")[2]) for k in state if k.startswith("mlp_decoder.")})
    between = torch_activation(activation or "ReLU", "decoder_activation")
    return linear_stack(state, [f"mlp_decoder.layers.{module}" for module in modules],
                        between)


def import_neuralforecast(path: str | Path) -> Imported:
    """Import a NeuralForecast ``LSTM``/``GRU`` model file (``<alias>_<n>.safetensors``)."""
    path = Path(path)
    read = read_nf_file(path)
    if read is None:
        raise ImportFailed(f"{path.name} is not a NeuralForecast model file")
    raw, metadata = read
    model_class = metadata["model_class"]
    if model_class not in _MODELS:
        raise ImportFailed(f"NeuralForecast {model_class} is not supported: statecast imports "
                           "LSTM and GRU")
    try:
        hp = json.loads(metadata["hyper_parameters"])
    except ValueError as error:
        raise ImportFailed(f"{path.name}: unreadable hyper_parameters: {error}") from None
    _check_configuration(path)
    for key in ("stat_exog_list", "cat_exog_list"):
        if hp.get(key):
            raise ImportFailed(f"{key}={hp[key]} is not supported yet")
    if hp.get("exclude_insample_y"):
        raise ImportFailed("exclude_insample_y=True is not supported yet")
    recurrent = bool(hp.get("recurrent", False))
    scaler = hp.get("scaler_type") or "identity"
    if scaler not in WINDOW_SCALERS:
        raise ImportFailed(f"scaler_type {scaler!r} is not supported; supported: "
                           f"{list(WINDOW_SCALERS)}")
    output = _loss(hp, raw, recurrent)
    state = _to_numpy({k: v for k, v in raw.items() if not k.startswith(
        ("__hparams__.", "loss.", "valid_loss."))})
    if any(k.startswith("upsample_sequence.") for k in state):
        raise ImportFailed("upsample_sequence (h > input_size) is not supported yet")
    h, window = _sizes(hp, recurrent)
    layers, tensors = _recurrent_layers(state, _layer_keys(["hist_encoder."], False, state),
                                        _MODELS[model_class])
    hist = tuple(str(name) for name in hp.get("hist_exog_list") or ())
    futr = tuple(str(name) for name in hp.get("futr_exog_list") or ())
    features = ("y", *hist, *futr)
    if layers[0].input_size != len(features):
        raise ImportFailed(f"the encoder reads {layers[0].input_size} features; the file "
                           f"names {len(features)}: {list(features)}")
    used = {k for k in state if k.startswith(("hist_encoder.", "mlp_decoder.", "proj."))}
    extra = sorted(set(state) - used)
    if extra:
        raise ImportFailed(f"tensors {extra[:6]} are not part of the {model_class} statecast "
                           "reproduces")
    common: dict[str, Any] = {
        "input_size": len(features), "layers": tuple(layers), "features": features,
        "targets": ("y",), "state_mode": f"window:{window}", "output": output,
        "window_scaler": WindowScalerSpec(scaler, tuple(range(len(features)))),
        "future_features": futr}
    if not recurrent:
        head, head_tensors = _decoder(state, hp.get("decoder_activation"))
        tensors.update(head_tensors)
        spec_args: dict[str, Any] = dict(head=tuple(head), forecast_mode="direct", horizon=h,
                                         head_steps=h)
    else:
        spec_args = dict(forecast_mode="recursive", horizon=h,
                         covariate_lead=bool(hist or futr))
        if "proj.weight" in state:
            weight = state["proj.weight"]
            spec_args.update(head=(DenseLayerSpec(int(weight.shape[1]),
                                                  int(weight.shape[0])),),
                             head_every_step=True)
            tensors["head.0.weight"] = np.ascontiguousarray(weight.T)
            tensors["head.0.bias"] = state["proj.bias"]
    try:
        spec = ModelSpec(**common, **spec_args)
    except ValueError as error:
        raise ImportFailed(f"the {model_class} file does not fit together: {error}") from None
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return Imported(spec, tensors, {
        "framework": "neuralforecast", "class": model_class, "file": path.name,
        "sha256": digest, "nf_format": metadata.get("nf_format"),
        "outputs": (f"{model_class} ({'recurrent' if recurrent else 'direct'}), window "
                    f"{window}, scaler {scaler}, h {h}; window rows [{', '.join(features)}]"
                    + (f"; point value of its {output.kind} head" if output.kind != "point"
                       else ""))})
