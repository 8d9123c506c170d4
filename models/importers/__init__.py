"""Importers: framework files -> a spec and canonical tensors, ready to publish."""

from statecast.models.importers.common import ForecastOptions, Imported, build_spec, load_scaler
from statecast.models.importers.keras import import_keras
from statecast.models.importers.pytorch import import_pytorch, import_state_dict, read_state_dict

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
