"""``statecast run``: a model version on arrays from an .npz file, written to another."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from statecast.models import Model, Registry
from statecast.models.errors import InvalidInput


def _initial_state(model: Model, inputs: Any) -> Any:
    names = set(inputs.files)
    if "h0" in names:
        return (inputs["h0"], inputs["c0"]) if "c0" in names else (inputs["h0"],)
    if "h0_0" in names:
        return [(inputs[f"h0_{i}"],) + ((inputs[f"c0_{i}"],) if f"c0_{i}" in names else ())
                for i in range(len(model.spec.layers))]
    return None


def _run_forecast(model: Model, x: np.ndarray, horizon: int, output: str) -> int:
    """``x`` as raw observations: each series' state after them and its forecast, in
    original units, by the verbs the service and the batch job run."""
    if x.ndim != 3:
        raise InvalidInput(f"x must be [series, time, features], got shape {x.shape}")
    states = model.advance(model.new_arena(len(x)), list(x))
    forecast = model.predict(states, horizon)
    np.savez(output, state=states, forecast=forecast)
    print(f"forecast {model.name}@{model.version} {horizon} steps for {len(x)} series: "
          f"wrote state, forecast to {output}")
    return 0


def run_arrays(args: argparse.Namespace, registry: Registry) -> int:
    """``statecast run``: a model version on the arrays of an .npz file (``--forecast``:
    raw observations through the verbs, else ``Model.run``)."""
    model = registry.load(args.model)
    try:
        inputs = np.load(args.inputs, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise InvalidInput(f"cannot read {args.inputs}: {error}") from None
    if "x" not in inputs.files:
        raise InvalidInput(f"{args.inputs} has no array 'x' (found {inputs.files})")
    missing = [f"h0_{i}" for i in range(len(model.spec.layers))
               if "h0_0" in inputs.files and f"h0_{i}" not in inputs.files]
    if missing:
        raise InvalidInput(f"{args.inputs} gives per-layer states but lacks {missing}")
    if args.forecast is not None:
        if any(name.startswith(("h0", "c0")) for name in inputs.files):
            raise InvalidInput("--forecast starts every series from the model's initial "
                               "state: drop h0/c0 from the inputs")
        return _run_forecast(model, inputs["x"], args.forecast, args.output)
    outputs, state, head = model.run(inputs["x"], _initial_state(model, inputs))
    result: dict[str, np.ndarray] = {"y": outputs}
    widths = {(h.shape[1], None if c is None else c.shape[1]) for h, c in zip(state.h, state.c,
                                                                        strict=True)}
    if len(widths) == 1:
        h_n, c_n = state.stacked()
        result["h_n"] = h_n
        if c_n is not None:
            result["c_n"] = c_n
    else:
        for index, (h, c) in enumerate(zip(state.h, state.c, strict=True)):
            result[f"h_n_{index}"] = h
            if c is not None:
                result[f"c_n_{index}"] = c
    if head is not None:
        result["head"] = head
    np.savez(args.output, **result)  # type: ignore[arg-type]
    print(f"ran {model.name}@{model.version} on x {inputs['x'].shape}: wrote "
          f"{', '.join(sorted(result))} to {args.output}")
    return 0
