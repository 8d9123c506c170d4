"""Models: the spec, the native artifact, importers and the registry.

Stable API: ``Registry(root).load("name[@version]")`` returns a :class:`Model`, and
``Model.run(x, state=None) -> (outputs, state, head)``.
"""

from models.errors import (
    ArtifactError,
    ImportFailed,
    IntegrityError,
    InvalidInput,
    InvalidName,
    InvalidSpec,
    ModelError,
    ModelNotFound,
    StatecastError,
    VersionExists,
)
from models.model import Model, State
from models.registry import Registry
from models.spec import (
    ActivationSpec,
    DenseLayerSpec,
    ModelSpec,
    RecurrentLayerSpec,
    ScalingSpec,
)

__all__ = [
    "ActivationSpec",
    "ArtifactError",
    "DenseLayerSpec",
    "ImportFailed",
    "IntegrityError",
    "InvalidInput",
    "InvalidName",
    "InvalidSpec",
    "Model",
    "ModelError",
    "ModelNotFound",
    "ModelSpec",
    "RecurrentLayerSpec",
    "Registry",
    "ScalingSpec",
    "State",
    "StatecastError",
    "VersionExists",
]
