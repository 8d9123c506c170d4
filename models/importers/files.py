"""The one entry to import a model file, whatever it holds: used by the command line and
the admin API alike, so that both accept the same files the same way."""

from __future__ import annotations

from pathlib import Path

from statecast.models.errors import ImportFailed
from statecast.models.importers.common import ForecastOptions, Imported
from statecast.models.importers.keras import import_keras
from statecast.models.importers.libraries import import_library_file
from statecast.models.importers.onnx import import_onnx
from statecast.models.importers.pytorch import import_pytorch

#: The formats of framework files, which need forecast options to become a model.
FORMATS = ("torch", "safetensors", "keras", "onnx")
#: The format each suffix stands for when none is given.
SUFFIX_FORMATS = {".pt": "torch", ".pth": "torch", ".safetensors": "safetensors",
                  ".keras": "keras", ".h5": "keras", ".onnx": "onnx"}
#: Every suffix an imported file may have (``.ckpt``: a Darts checkpoint).
SUFFIXES = (*SUFFIX_FORMATS, ".ckpt")


def import_file(path: str | Path, *, file_format: str | None = None,
                options: ForecastOptions | None = None, cell: str | None = None,
                rnn_prefix: str | None = None, head_prefix: str | None = None,
                head_activations: list[str] | None = None,
                head_every_step: bool = False) -> Imported:
    """Import ``path``: a forecasting library's save (Darts, NeuralForecast), recognised by
    its contents and imported with no options, unless ``file_format`` names a framework;
    else a framework file of ``file_format`` (default: from its suffix) with the forecast
    ``options``. ``cell``, ``rnn_prefix``, ``head_prefix``, ``head_activations`` and
    ``head_every_step`` describe a PyTorch state_dict (:func:`import_state_dict`)."""
    path = Path(path)
    if file_format is None:
        library = import_library_file(path)
        if library is not None:
            return library
    file_format = file_format or SUFFIX_FORMATS.get(path.suffix.lower())
    if file_format not in FORMATS:
        raise ImportFailed(f"cannot tell the format of {path.name}: give one of "
                           f"{', '.join(FORMATS)} (or a file named {', '.join(SUFFIXES)})")
    if file_format == "keras":
        return import_keras(path, options)
    if file_format == "onnx":
        return import_onnx(path, options)
    return import_pytorch(path, options, cell=cell, rnn_prefix=rnn_prefix,
                          head_prefix=head_prefix, head_activations=head_activations,
                          head_every_step=head_every_step)
