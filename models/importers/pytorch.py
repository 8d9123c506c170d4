"""Import PyTorch ``nn.LSTM``/``nn.GRU`` (or ``LSTMCell``/``GRUCell``) state_dicts.

A state_dict carries no architecture: layers, sizes, ``proj_size`` and the cell type are
read from key names and shapes. ``.pt``/``.pth`` files are read with
``torch.load(weights_only=True)`` (never a full unpickle); ``.safetensors`` files need no
torch at all. Bidirectional models are refused: a stream is consumed causally.
"""

from __future__ import annotations

import hashlib
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from statecast.models.errors import ImportFailed
from statecast.models.importers.common import ForecastOptions, Imported, build_spec
from statecast.models.layer_spec import ActivationSpec, DenseLayerSpec, RecurrentLayerSpec

_LAYER_KEY = re.compile(r"^(?P<prefix>.*?)weight_ih_l(?P<index>\d+)(?P<reverse>_reverse)?$")
_CELL_KEY = re.compile(r"^(?P<prefix>.*?)weight_ih$")
_CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model")
_SAVE_HINT = ("save the weights with torch.save(model.state_dict(), path) (or "
              "safetensors.torch.save_file(model.state_dict(), path)) and import that file")


def _natural(text: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _to_numpy(tensors: Mapping[str, Any]) -> dict[str, np.ndarray]:
    arrays = {}
    for key, value in tensors.items():
        array = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
        if not np.issubdtype(array.dtype, np.floating):
            continue  # e.g. BatchNorm's num_batches_tracked: no weight
        arrays[str(key)] = np.ascontiguousarray(array, dtype=np.float32)
    return arrays


def _read_torch_file(path: Path) -> dict[str, np.ndarray]:
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic != b"PK\x03\x04":
        raise ImportFailed(f"{path} is not a torch.save zip file (a legacy pickle or another "
                           f"format); {_SAVE_HINT}")
    try:
        import torch
    except ImportError:
        raise ImportFailed("reading .pt files needs PyTorch: pip install 'statecast[torch]', "
                           "or convert the state_dict to .safetensors") from None
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError) as error:
        raise ImportFailed(f"{path} holds more than tensors (a pickled nn.Module?) and is "
                           f"refused: {_SAVE_HINT}. ({str(error).splitlines()[0]})") from None
    if not isinstance(loaded, Mapping):
        raise ImportFailed(f"{path} holds a {type(loaded).__name__}, not a state_dict; "
                           f"{_SAVE_HINT}")
    if not any(hasattr(v, "shape") for v in loaded.values()):
        for key in _CHECKPOINT_KEYS:
            if isinstance(loaded.get(key), Mapping):
                loaded = loaded[key]
                break
        else:
            raise ImportFailed(f"{path} holds no tensors at its top level (keys: "
                               f"{sorted(loaded)[:10]}); {_SAVE_HINT}")
    return _to_numpy(loaded)


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Read a state_dict from ``.pt``/``.pth`` (weights only) or ``.safetensors``."""
    path = Path(path)
    if not path.is_file():
        raise ImportFailed(f"no file {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.numpy import load_file
        try:
            return _to_numpy(load_file(str(path)))
        except (SafetensorError, OSError) as error:
            raise ImportFailed(f"{path}: {error}") from None
    return _read_torch_file(path)


def _pick_prefixes(state: dict[str, np.ndarray], rnn_prefix: str | None
                   ) -> tuple[list[str], bool]:
    """The module prefixes that hold the recurrent layers, in order; True for cell modules."""
    reverse = sorted(k for k in state if (m := _LAYER_KEY.match(k)) and m["reverse"])
    if reverse:
        raise ImportFailed(f"bidirectional recurrent layers ({reverse[0]}) are refused: a "
                           f"stream is consumed causally, one observation after another")
    stacks = sorted({m["prefix"] for k in state if (m := _LAYER_KEY.match(k))}, key=_natural)
    cells = sorted({m["prefix"] for k in state if (m := _CELL_KEY.match(k))}, key=_natural)
    if rnn_prefix is not None:
        stacks = [p for p in stacks if p == rnn_prefix]
        cells = [p for p in cells if p == rnn_prefix]
    if stacks and cells:
        raise ImportFailed(f"both nn.LSTM/GRU modules {stacks} and cells {cells} found: "
                           f"choose one with --rnn-prefix")
    if not stacks and not cells:
        where = f" under prefix {rnn_prefix!r}" if rnn_prefix is not None else ""
        raise ImportFailed(f"no LSTM/GRU weights (weight_ih_l0 or weight_ih){where}; keys: "
                           f"{sorted(state)[:12]}")
    return (stacks, False) if stacks else (cells, True)


def _layer_keys(prefixes: list[str], cells: bool, state: dict[str, np.ndarray]
                ) -> list[dict[str, str]]:
    """Per layer, the keys of its tensors (``ih``, ``hh``, ``b_ih``, ``b_hh``, ``hr``)."""
    layers = []
    for prefix in prefixes:
        if cells:
            suffixes = [""]
        else:
            indices = sorted(int(m["index"]) for k in state
                             if (m := _LAYER_KEY.match(k)) and m["prefix"] == prefix)
            if indices != list(range(len(indices))):
                raise ImportFailed(f"{prefix}: layer indices {indices} are not 0..n-1")
            suffixes = [f"_l{i}" for i in indices]
        for suffix in suffixes:
            layers.append({part: f"{prefix}{name}{suffix}" for part, name in (
                ("ih", "weight_ih"), ("hh", "weight_hh"), ("b_ih", "bias_ih"),
                ("b_hh", "bias_hh"), ("hr", "weight_hr"))})
    return layers


def _recurrent_layers(state: dict[str, np.ndarray], layer_keys: list[dict[str, str]],
                      cell: str | None) -> tuple[list[RecurrentLayerSpec], dict[str, np.ndarray]]:
    specs: list[RecurrentLayerSpec] = []
    tensors: dict[str, np.ndarray] = {}
    width = None
    for index, keys in enumerate(layer_keys):
        w_ih, w_hh = state.get(keys["ih"]), state.get(keys["hh"])
        if w_ih is None or w_hh is None or w_ih.ndim != 2 or w_hh.ndim != 2:
            raise ImportFailed(f"layer {index}: needs 2-D {keys['ih']} and {keys['hh']}")
        w_hr = state.get(keys["hr"])
        rows, recurrent = w_hh.shape
        if w_hr is not None:
            kind, hidden = "lstm", w_hr.shape[1]
        elif rows == 4 * recurrent:
            kind, hidden = "lstm", recurrent
        elif rows == 3 * recurrent:
            kind, hidden = "gru", recurrent
        else:
            raise ImportFailed(f"layer {index}: {keys['hh']} has shape {w_hh.shape}, neither "
                               f"LSTM [4H, H] nor GRU [3H, H]")
        if cell is not None and cell != kind:
            raise ImportFailed(f"layer {index}: shapes say {kind}, --cell says {cell}")
        gates = (4 if kind == "lstm" else 3) * hidden
        proj = w_hr.shape[0] if w_hr is not None else 0
        if w_ih.shape[0] != gates or rows != gates or (w_hr is not None and (
                w_hr.shape != (proj, hidden) or recurrent != proj)):
            raise ImportFailed(f"layer {index}: inconsistent shapes {keys['ih']} "
                               f"{w_ih.shape}, {keys['hh']} {w_hh.shape}"
                               + (f", {keys['hr']} {w_hr.shape}" if w_hr is not None else ""))
        if width is not None and w_ih.shape[1] != width:
            raise ImportFailed(f"layer {index} ({keys['ih']}) takes {w_ih.shape[1]} inputs but "
                               f"the layer before emits {width}")
        biases = []
        for part in ("b_ih", "b_hh"):
            bias = state.get(keys[part], np.zeros(gates, np.float32))
            if bias.shape != (gates,):
                raise ImportFailed(f"{keys[part]} has shape {bias.shape}, expected ({gates},)")
            biases.append(bias)
        spec = RecurrentLayerSpec(cell=kind, input_size=int(w_ih.shape[1]),
                                  hidden_size=int(hidden), proj_size=int(proj))
        prefix = f"layers.{index}."
        tensors[prefix + "w_ih"] = w_ih.T.copy()
        tensors[prefix + "w_hh"] = w_hh.T.copy()
        tensors[prefix + "b_ih"], tensors[prefix + "b_hh"] = biases
        if w_hr is not None:
            tensors[prefix + "w_hr"] = w_hr.T.copy()
        specs.append(spec)
        width = spec.output_size
    return specs, tensors


def _head_modules(state: dict[str, np.ndarray], used: set[str], head_prefix: str | None
                  ) -> list[str]:
    """Module paths (ending in '.' or empty) of the head's Linear layers, in order."""
    rest = {k for k in state if k not in used}
    if head_prefix is not None:
        rest = {k for k in rest if k.startswith(head_prefix)}
        if not rest:
            raise ImportFailed(f"no tensors under head prefix {head_prefix!r}")
    modules = sorted({k[:-len("weight")] for k in rest
                      if k.endswith("weight") and state[k].ndim == 2}, key=_natural)
    leftovers = sorted(k for k in rest if not any(
        k in (m + "weight", m + "bias") for m in modules))
    if leftovers:
        raise ImportFailed(f"tensors that are neither recurrent layers nor a Linear head: "
                           f"{leftovers[:8]}; give --rnn-prefix/--head-prefix to choose")
    return modules


def _head_layers(state: dict[str, np.ndarray], modules: list[str], width: int,
                 activations: list[str] | None) -> tuple[list[DenseLayerSpec],
                                                        dict[str, np.ndarray]]:
    if activations is not None and len(activations) != len(modules):
        raise ImportFailed(f"{len(activations)} head activations given for {len(modules)} "
                           f"Linear layers {modules}")
    if activations is None and len(modules) > 1:
        raise ImportFailed(f"the head has {len(modules)} Linear layers {modules}; a state_dict "
                           f"does not record the activations between them: give "
                           f"--head-activations (e.g. relu,linear)")
    specs, tensors = [], {}
    for index, module in enumerate(modules):
        weight = state[module + "weight"]
        if weight.shape[1] != width:
            raise ImportFailed(f"head layer {module}weight takes {weight.shape[1]} inputs but "
                               f"receives {width}")
        bias = state.get(module + "bias", np.zeros(weight.shape[0], np.float32))
        name = activations[index] if activations else "linear"
        specs.append(DenseLayerSpec(int(weight.shape[1]), int(weight.shape[0]),
                                    ActivationSpec.of(name)))
        tensors[f"head.{index}.weight"] = weight.T.copy()
        tensors[f"head.{index}.bias"] = bias
        width = int(weight.shape[0])
    return specs, tensors


def import_state_dict(state: dict[str, np.ndarray], options: ForecastOptions | None = None, *,
                      cell: str | None = None, rnn_prefix: str | None = None,
                      head_prefix: str | None = None,
                      head_activations: list[str] | None = None,
                      head_every_step: bool = False) -> Imported:
    """Turn a state_dict (name -> array) into a spec and canonical tensors.

    Parameters
    ----------
    state : dict[str, np.ndarray]
        PyTorch names and layouts (``weight_ih_l0 [4H, I]`` ...).
    options : ForecastOptions
        Mode, horizon, targets, features, state mode and scaler.
    cell : {"lstm", "gru"}, optional
        Checked against what the shapes say.
    rnn_prefix, head_prefix : str, optional
        Module prefixes (e.g. ``"encoder.lstm."``, ``"fc."``) when guessing is ambiguous.
    head_activations : list of str, optional
        One activation per Linear of the head (a state_dict does not record them).
    head_every_step : bool
        The head is applied at every step (seq2seq), not only the last one.
    """
    options = options or ForecastOptions()
    prefixes, cells = _pick_prefixes(state, rnn_prefix)
    layer_keys = _layer_keys(prefixes, cells, state)
    layers, tensors = _recurrent_layers(state, layer_keys, cell)
    used = {key for keys in layer_keys for key in keys.values()}
    modules = _head_modules(state, used, head_prefix)
    head, head_tensors = _head_layers(state, modules, layers[-1].output_size, head_activations)
    tensors.update(head_tensors)
    spec = build_spec(layers, head, options, head_every_step=head_every_step)
    return Imported(spec, tensors, {"framework": "pytorch"})


def import_pytorch(path: str | Path, options: ForecastOptions | None = None,
                   **kwargs: Any) -> Imported:
    """Import a ``.pt``/``.pth``/``.safetensors`` state_dict file (see
    :func:`import_state_dict` for the keyword arguments)."""
    path = Path(path)
    imported = import_state_dict(read_state_dict(path), options, **kwargs)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return Imported(imported.spec, imported.tensors,
                    {"framework": "pytorch", "file": path.name, "sha256": digest})
