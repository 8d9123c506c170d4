"""Import Keras models: Keras 3 ``.keras`` files (zip of ``config.json``, ``metadata.json``,
``model.weights.h5``) and legacy full-model ``.h5`` files (tf.keras 2, Keras 3's legacy
writer), read with ``zipfile``, ``json`` and ``h5py`` only - no TensorFlow, no Keras, no
unpickling.

Supported: Sequential models and Functional chains of an input, LSTM/GRU layers (widths may
differ; ``dropout``/``recurrent_dropout`` and ``Dropout`` layers are inference no-ops) and
a head of ``Dense`` layers on the last step, or on every step when the last recurrent layer
returns sequences. ``hard_sigmoid`` is Keras 3's ``clip(x/6 + 0.5, 0, 1)`` for files saved
by Keras 3 and ``clip(0.2x + 0.5, 0, 1)`` for older ones: decided by the ``keras_version``
the file records.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from statecast.models.errors import ImportFailed
from statecast.models.importers.common import ForecastOptions, Imported, build_spec
from statecast.models.layer_spec import ActivationSpec, DenseLayerSpec, RecurrentLayerSpec

#: Keras activation names -> statecast's (hard_sigmoid is resolved by version).
_ACTIVATIONS = {"tanh": "tanh", "sigmoid": "sigmoid", "relu": "relu", "linear": "linear",
                "softsign": "softsign", "softplus": "softplus", "elu": "elu",
                "hard_sigmoid": "hard_sigmoid"}
_IGNORED = {"InputLayer", "Dropout", "SpatialDropout1D", "GaussianNoise", "GaussianDropout",
            "AlphaDropout", "ActivityRegularization"}
_RECURRENT = {"LSTM": "lstm", "GRU": "gru"}


def _snake(name: str) -> str:
    """Keras' group name for a layer class: ``LSTM`` -> ``lstm``, ``SimpleRNN`` ->
    ``simple_rnn``."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def _major_version(metadata: dict[str, Any]) -> int:
    version = str(metadata.get("keras_version", "3"))
    try:
        return int(version.split(".")[0])
    except ValueError:
        raise ImportFailed(f"unreadable keras_version {version!r}") from None


def activation_of(name: Any, keras_major: int, where: str) -> ActivationSpec:
    """A Keras activation as a spec; ``hard_sigmoid`` by the Keras version that saved it."""
    if isinstance(name, dict):
        name = name.get("config", {}).get("name", name.get("class_name"))
    if name not in _ACTIVATIONS:
        raise ImportFailed(f"{where}: activation {name!r} is not supported; supported: "
                           f"{sorted(_ACTIVATIONS)}")
    if name == "hard_sigmoid":
        return ActivationSpec.of("hard_sigmoid", 1 / 6 if keras_major >= 3 else 0.2, 0.5)
    return ActivationSpec.of(_ACTIVATIONS[name])


def _layers_in_order(config: dict[str, Any]) -> list[dict[str, Any]]:
    kind = config.get("class_name")
    if kind not in ("Sequential", "Functional", "Model"):
        raise ImportFailed(f"a {kind} model is not supported: save a Sequential or Functional "
                           "model")
    layers = config.get("config", {}).get("layers")
    if not isinstance(layers, list):
        raise ImportFailed("config.json has no layer list")
    return layers


Variables = Callable[[str, str, bool], list[np.ndarray]]


def _v3_variables(weights: Any) -> Variables:
    """Keras 3 ``model.weights.h5``: groups named after the layer *class*, counted in model
    order (``layers/lstm``, ``layers/lstm_1``), whatever the layer's own name."""

    def read(name: str, group: str, cell: bool) -> list[np.ndarray]:
        path = f"layers/{group}/cell/vars" if cell else f"layers/{group}/vars"
        if path not in weights:
            raise ImportFailed(f"model.weights.h5 has no group {path} (layer {name!r})")
        node = weights[path]
        return [np.asarray(node[str(i)], dtype=np.float32) for i in range(len(node))]

    return read


def _names_attribute(node: Any, key: str) -> list[str]:
    """An h5 name-list attribute, also when HDF5's 64 KB limit split it into key0, key1..."""
    if key in node.attrs:
        values = list(node.attrs[key])
    else:
        values, chunk = [], 0
        while f"{key}{chunk}" in node.attrs:
            values.extend(node.attrs[f"{key}{chunk}"])
            chunk += 1
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def _legacy_variables(model_weights: Any) -> Variables:
    """Legacy ``.h5``: ``model_weights/<layer name>`` lists its datasets in
    ``weight_names`` (``lstm/lstm_cell/kernel`` from Keras 3, ``lstm_cell/kernel:0`` from
    tf.keras 2): follow the list, never build paths."""

    def read(name: str, group: str, cell: bool) -> list[np.ndarray]:
        if name not in model_weights:
            raise ImportFailed(f"model_weights has no group for layer {name!r}")
        node = model_weights[name]
        return [np.asarray(node[path], dtype=np.float32)
                for path in _names_attribute(node, "weight_names")]

    return read


def _recurrent(kind: str, cfg: dict[str, Any], variables: list[np.ndarray], width: int,
               keras_major: int, where: str) -> tuple[RecurrentLayerSpec,
                                                      dict[str, np.ndarray]]:
    if cfg.get("go_backwards"):
        raise ImportFailed(f"{where}: go_backwards layers are refused: a stream is consumed "
                           "causally")
    units = int(cfg["units"])
    gates = (4 if kind == "lstm" else 3) * units
    kernel, recurrent = variables[0], variables[1]
    if kernel.shape != (width, gates) or recurrent.shape != (units, gates):
        raise ImportFailed(f"{where}: weights {kernel.shape}, {recurrent.shape} do not fit "
                           f"{width} inputs and {units} units")
    bias = variables[2] if cfg.get("use_bias", True) and len(variables) > 2 else None
    cell_act = activation_of(cfg.get("activation", "tanh"), keras_major, where)
    gate_act = activation_of(cfg.get("recurrent_activation", "sigmoid"), keras_major, where)
    zeros = np.zeros(gates, np.float32)
    if kind == "lstm":  # Keras' i, f, c, o is statecast's i, f, g, o
        b_ih = bias if bias is not None else zeros
        spec = RecurrentLayerSpec("lstm", width, units, gate_activation=gate_act,
                                  cell_activation=cell_act, hidden_activation=cell_act)
        return spec, {"w_ih": kernel, "w_hh": recurrent, "b_ih": b_ih, "b_hh": zeros}
    # Keras' GRU blocks are z, r, h; statecast's are r, z, n.
    order = np.concatenate([np.arange(units, 2 * units), np.arange(units),
                            np.arange(2 * units, 3 * units)])
    reset_after = bool(cfg.get("reset_after", True))
    if bias is None:
        b_ih, b_hh = zeros, zeros
    elif reset_after:
        if bias.shape != (2, gates):
            raise ImportFailed(f"{where}: reset_after GRU bias must be [2, {gates}]")
        b_ih, b_hh = bias[0][order], bias[1][order]
    else:
        b_ih, b_hh = bias.reshape(-1)[order], zeros
    spec = RecurrentLayerSpec("gru", width, units, gate_activation=gate_act,
                              cell_activation=cell_act, reset_after=reset_after)
    return spec, {"w_ih": kernel[:, order].copy(), "w_hh": recurrent[:, order].copy(),
                  "b_ih": np.ascontiguousarray(b_ih), "b_hh": np.ascontiguousarray(b_hh)}


def import_keras_parts(config: dict[str, Any], metadata: dict[str, Any], variables: Variables,
                       options: ForecastOptions | None = None) -> Imported:
    """Build the spec and tensors from a parsed model config, the file's metadata
    (``keras_version``) and a reader of each layer's variables."""
    keras_major = _major_version(metadata)
    counters: dict[str, int] = {}
    layers: list[RecurrentLayerSpec] = []
    head: list[DenseLayerSpec] = []
    tensors: dict[str, np.ndarray] = {}
    width: int | None = None
    head_every_step = False
    layers_return_sequences = False
    ordered = _layers_in_order(config)
    inputs = [layer for layer in ordered if layer.get("class_name") == "InputLayer"]
    if len(inputs) > 1:
        raise ImportFailed(f"the model has {len(inputs)} inputs "
                           f"({', '.join(repr(i.get('config', {}).get('name')) for i in inputs)}"
                           "); models that take initial states (initial_state=[h, c]) or "
                           "covariates through extra Inputs are refused: statecast keeps the "
                           "state itself - rebuild the model with one input")
    for layer in ordered:
        kind, cfg = layer.get("class_name"), layer.get("config", {})
        name = cfg.get("name", kind)
        snake = _snake(str(kind))
        count = counters.get(snake, 0)
        counters[snake] = count + 1
        group = snake if count == 0 else f"{snake}_{count}"
        where = f"layer {name!r} ({kind})"
        if kind == "InputLayer":
            shape = cfg.get("batch_shape") or cfg.get("batch_input_shape")
            if shape:
                width = int(shape[-1])
            continue
        if kind in _IGNORED:
            continue
        if kind in _RECURRENT:
            if head:
                raise ImportFailed(f"{where}: a recurrent layer after Dense layers is not "
                                   "supported")
            if layers and not layers_return_sequences:
                raise ImportFailed(f"{where}: the layer before does not return sequences")
            values = variables(name, group, True)
            if width is None:
                width = int(values[0].shape[0])
            layer_spec, parts = _recurrent(_RECURRENT[kind], cfg, values, width,
                                           keras_major, where)
            for part, tensor in parts.items():
                tensors[f"layers.{len(layers)}.{part}"] = np.ascontiguousarray(tensor)
            layers.append(layer_spec)
            layers_return_sequences = bool(cfg.get("return_sequences", False))
            width = layer_spec.output_size
            continue
        if kind == "Dense":
            if not layers:
                raise ImportFailed(f"{where}: Dense layers before the recurrent ones are not "
                                   "supported")
            head_every_step = layers_return_sequences
            values = variables(name, group, False)
            kernel = values[0]
            units = int(cfg["units"])
            if kernel.shape != (width, units):
                raise ImportFailed(f"{where}: kernel {kernel.shape} does not fit {width} "
                                   f"inputs and {units} units")
            bias = (values[1] if cfg.get("use_bias", True) and len(values) > 1
                    else np.zeros(units, np.float32))
            tensors[f"head.{len(head)}.weight"] = np.ascontiguousarray(kernel)
            tensors[f"head.{len(head)}.bias"] = np.ascontiguousarray(bias)
            head.append(DenseLayerSpec(int(width or 0), units,
                                       activation_of(cfg.get("activation", "linear"),
                                                     keras_major, where)))
            width = units
            continue
        if kind == "Bidirectional":
            raise ImportFailed(f"{where}: bidirectional layers are refused: a stream is "
                               "consumed causally")
        raise ImportFailed(f"{where} is not supported: statecast imports LSTM, GRU, Dense "
                           "and Dropout layers")
    if not layers:
        raise ImportFailed("the model has no LSTM or GRU layer")
    spec = build_spec(layers, head, options or ForecastOptions(),
                      head_every_step=head_every_step)
    return Imported(spec, tensors, {"framework": "keras",
                                    "keras_version": str(metadata.get("keras_version"))})


def _read_keras3(path: Path, options: ForecastOptions | None) -> Imported:
    import h5py

    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
            metadata = json.loads(archive.read("metadata.json"))
            weights_bytes = archive.read("model.weights.h5")
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError) as error:
        raise ImportFailed(f"{path.name} is not a Keras 3 .keras file: {error}") from None
    with h5py.File(io.BytesIO(weights_bytes), "r") as weights:
        return import_keras_parts(config, metadata, _v3_variables(weights), options)


def _read_legacy(path: Path, options: ForecastOptions | None) -> Imported:
    import h5py

    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise ImportFailed(f"{path.name} is not an HDF5 file: {error}") from None
    with handle:
        if "model_config" not in handle.attrs or "model_weights" not in handle:
            raise ImportFailed(f"{path.name} is not a full Keras model (.h5 with model_config "
                               "and model_weights); weights-only files carry no architecture")
        raw = handle.attrs["model_config"]
        config = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
        version = handle.attrs.get("keras_version", "2")
        metadata = {"keras_version": version.decode() if isinstance(version, bytes)
                    else str(version)}
        return import_keras_parts(config, metadata, _legacy_variables(handle["model_weights"]),
                                  options)


def import_keras(path: str | Path, options: ForecastOptions | None = None) -> Imported:
    """Import a Keras 3 ``.keras`` file or a legacy full-model ``.h5`` file."""
    path = Path(path)
    if not path.is_file():
        raise ImportFailed(f"no file {path}")
    reader = _read_keras3 if path.suffix == ".keras" else _read_legacy
    imported = reader(path, options)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return Imported(imported.spec, imported.tensors,
                    {**imported.source, "file": path.name, "sha256": digest})
