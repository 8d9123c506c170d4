"""A tiny valid model for registry, artifact and model tests."""

import numpy as np

from statecast.models import DenseLayerSpec, ModelSpec, RecurrentLayerSpec


def tiny_spec(**changes) -> ModelSpec:
    fields = {"input_size": 2,
              "layers": (RecurrentLayerSpec("lstm", 2, 4), RecurrentLayerSpec("gru", 4, 3)),
              "head": (DenseLayerSpec(3, 2),), "horizon": 2}
    fields.update(changes)
    return ModelSpec(**fields)


def tiny_tensors(spec: ModelSpec, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: (rng.standard_normal(shape) * 0.5).astype(np.float32)
            for name, shape in spec.tensor_shapes().items()}
