"""Typed model errors. Each class carries a stable machine ``code`` and the HTTP ``status``
a server answers it with, so that the HTTP layer maps every error the same way (from the
error itself, never from a table that could miss a code); nothing else here knows HTTP.
"""

from __future__ import annotations


class StatecastError(Exception):
    """Base of every error statecast raises on purpose; ``code`` is a stable machine name,
    ``status`` the HTTP status of the refusal (a client error unless a subclass says
    otherwise: an error raised on purpose is never an unexplained 500)."""

    code = "statecast_error"
    status = 400


class ModelError(StatecastError):
    """Something is wrong with a model, its files or its registry."""

    code = "model_error"
    status = 422


class InvalidName(ModelError, ValueError):
    """A model name, version or alias does not match ``[A-Za-z0-9][A-Za-z0-9._-]{0,127}``."""

    code = "invalid_name"
    status = 422


class ModelNotFound(ModelError, LookupError):
    """No such model, version or alias in the registry."""

    code = "model_not_found"
    status = 404


class VersionExists(ModelError):
    """Publishing a version that already exists (versions are immutable)."""

    code = "version_exists"
    status = 409


class InvalidSpec(ModelError, ValueError):
    """A model spec is inconsistent (sizes, modes, scaling) or cannot be parsed."""

    code = "invalid_spec"
    status = 422


class ArtifactError(ModelError):
    """A native artifact is incomplete, corrupt or does not match its manifest."""

    code = "artifact_error"
    status = 422


class IntegrityError(ArtifactError):
    """A weight file's sha256 differs from the one its manifest records."""

    code = "integrity_error"
    status = 422


class ImportFailed(ModelError, ValueError):
    """A framework file cannot be imported; the message says what is missing or refused."""

    code = "import_failed"
    status = 422


class InvalidInput(ModelError, ValueError):
    """Arrays given to a model have the wrong shape, dtype or values."""

    code = "invalid_input"
    status = 422


class InvalidLevel(ModelError):
    """A level outside (0, 100), repeated, or too many levels."""

    code = "invalid_level"
    status = 422


class LevelUnavailable(ModelError):
    """The model cannot give intervals at this level: no calibration, or a calibration
    shorter than the horizon asked for."""

    code = "level_unavailable"
    status = 422


class InvalidCalibration(ModelError):
    """Calibration scores that are not finite absolute errors ``[n >= 1, horizon,
    targets]``."""

    code = "invalid_calibration"
    status = 422
