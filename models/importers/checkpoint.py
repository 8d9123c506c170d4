"""Read pickled PyTorch/Lightning checkpoints without running anything from them.

Forecasting libraries save Lightning checkpoints whose pickles name their own classes (loss
modules, likelihoods, metric collections, optimizers). ``torch.load(weights_only=True)``
refuses every class it does not know; here each such name is bound to an inert stand-in
(:class:`StandIn`) that only records what the pickle hands it. Nothing named by the file is
imported or called: a ``__reduce__`` naming ``os.system`` builds a stand-in, not a shell.
Tensors are rebuilt by PyTorch's own restricted unpickler.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from statecast.models.errors import ImportFailed


class StandIn:
    """An inert object for a class or function a checkpoint names: calling it, building it
    or filling it only records the arguments (``args``, ``kwargs``, ``state``, ``items``)."""

    qualified_name = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.kwargs = kwargs
        self.state: Any = None
        self.items: dict[Any, Any] = {}
        self.listed: list[Any] = []

    def __setstate__(self, state: Any) -> None:
        self.state = state

    # A pickle may build an instance without calling __init__ (NEWOBJ): every method
    # makes what it records on first use.
    def __setitem__(self, key: Any, value: Any) -> None:
        self.__dict__.setdefault("items", {})[key] = value

    def append(self, value: Any) -> None:
        self.__dict__.setdefault("listed", []).append(value)

    def extend(self, values: Any) -> None:
        self.__dict__.setdefault("listed", []).extend(values)

    def __repr__(self) -> str:
        return f"<stand-in for {self.qualified_name}>"

    def field(self, name: str, default: Any = None) -> Any:
        """A recorded attribute: from the pickled ``__dict__`` state (or its slot part),
        else a keyword argument."""
        state = self.__dict__.get("state")
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict):
            state = state[0]
        if isinstance(state, dict) and name in state:
            return state[name]
        return self.__dict__.get("kwargs", {}).get(name, default)


def stand_in_for(qualified_name: str) -> type[StandIn]:
    """A new :class:`StandIn` subclass named after ``module.Name``."""
    short = qualified_name.rsplit(".", 1)[-1] or "StandIn"
    return type(short, (StandIn,), {"qualified_name": qualified_name})


def class_name(value: Any) -> str | None:
    """``module.Name`` of a stand-in instance or class, None for anything else."""
    if isinstance(value, StandIn) or (isinstance(value, type) and issubclass(value, StandIn)):
        return value.qualified_name
    return None


def load_checkpoint(path: Path) -> Any:
    """The unpickled contents of a ``torch.save`` zip file, every non-tensor class a stand-in.

    Raises :class:`ImportFailed` for files that are not torch zip files (legacy pickles are
    refused: they cannot be read without running them).
    """
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic != b"PK\x03\x04":
        raise ImportFailed(f"{path.name} is not a torch.save zip file; statecast does not "
                           "unpickle other formats")
    try:
        import torch
    except ImportError:
        raise ImportFailed("reading checkpoints needs PyTorch: pip install "
                           "'statecast[torch]'") from None
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
        pairs: list[Any] = [(stand_in_for(name), name) for name in names]
        with torch.serialization.safe_globals(pairs):
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, ValueError, TypeError,
            KeyError, EOFError) as error:
        raise ImportFailed(f"{path.name}: cannot read the checkpoint safely: "
                           f"{str(error).splitlines()[0] if str(error) else error!r}") from None
