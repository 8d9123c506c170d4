"""Importers: framework files -> a spec and canonical tensors, ready to publish."""

from models.importers.common import ForecastOptions, Imported, build_spec, load_scaler
from models.importers.keras import import_keras
from models.importers.pytorch import import_pytorch, import_state_dict, read_state_dict

__all__ = [
    "ForecastOptions",
    "Imported",
    "build_spec",
    "import_keras",
    "import_pytorch",
    "import_state_dict",
    "load_scaler",
    "read_state_dict",
]
