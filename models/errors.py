"""Typed model errors. No HTTP here: the service maps these to status codes in one place."""

from __future__ import annotations


class StatecastError(Exception):
    """Base of every error statecast raises on purpose; ``code`` is a stable machine name."""

    code = "statecast_error"


class ModelError(StatecastError):
    """Something is wrong with a model, its files or its registry."""

    code = "model_error"


class InvalidName(ModelError, ValueError):
    """A model name, version or alias does not match ``[A-Za-z0-9][A-Za-z0-9._-]{0,127}``."""

    code = "invalid_name"


class ModelNotFound(ModelError, LookupError):
    """No such model, version or alias in the registry."""

    code = "model_not_found"


class VersionExists(ModelError):
    """Publishing a version that already exists (versions are immutable)."""

    code = "version_exists"


class InvalidSpec(ModelError, ValueError):
    """A model spec is inconsistent (sizes, modes, scaling) or cannot be parsed."""

    code = "invalid_spec"


class ArtifactError(ModelError):
    """A native artifact is incomplete, corrupt or does not match its manifest."""

    code = "artifact_error"


class IntegrityError(ArtifactError):
    """A weight file's sha256 differs from the one its manifest records."""

    code = "integrity_error"


class ImportFailed(ModelError, ValueError):
    """A framework file cannot be imported; the message says what is missing or refused."""

    code = "import_failed"


class InvalidInput(ModelError, ValueError):
    """Arrays given to a model have the wrong shape, dtype or values."""

    code = "invalid_input"
