"""Models: the spec, the native artifact, importers and the registry.

Stable API: ``Registry(root).load("name[@version]")`` returns a :class:`Model`, and
``Model.run(x, state=None) -> (outputs, state, head)``.
"""

from statecast.models.errors import (
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
from statecast.models.layer_spec import ActivationSpec, DenseLayerSpec, RecurrentLayerSpec
from statecast.models.model import Model, State
from statecast.models.registry import Registry
from statecast.models.spec import ModelSpec, ScalingSpec

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
