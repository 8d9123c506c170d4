"""Importers: framework files -> a spec and canonical tensors, ready to publish
(:func:`import_file` takes any file the command line or the admin API accepts)."""

from statecast.models.importers.common import (
    ForecastOptions,
    Imported,
    build_spec,
    load_scaler,
    output_from_flags,
)
from statecast.models.importers.files import import_file
from statecast.models.importers.keras import import_keras
from statecast.models.importers.pytorch import import_pytorch, import_state_dict, read_state_dict

__all__ = [
    "ForecastOptions",
    "Imported",
    "build_spec",
    "import_file",
    "import_keras",
    "import_pytorch",
    "import_state_dict",
    "load_scaler",
    "output_from_flags",
    "read_state_dict",
]
