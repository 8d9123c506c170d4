"""Files that describe their own model (forecasting libraries' saves): recognised by their
contents, imported with no flags."""

from __future__ import annotations

from pathlib import Path

from statecast.models.importers.common import Imported
from statecast.models.importers.darts import import_darts, is_darts_file
from statecast.models.importers.neuralforecast import import_neuralforecast, read_nf_file


def import_library_file(path: str | Path) -> Imported | None:
    """The import of a Darts or NeuralForecast save, or None for any other file."""
    path = Path(path)
    if path.suffix in (".pt", ".pth", ".ckpt") and is_darts_file(path):
        return import_darts(path)
    if path.suffix == ".safetensors" and path.is_file() and read_nf_file(path) is not None:
        return import_neuralforecast(path)
    return None
