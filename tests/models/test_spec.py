"""The spec's defaults, validation and JSON form."""

import pytest

from statecast.models import (
    ActivationSpec,
    DenseLayerSpec,
    InvalidSpec,
    ModelSpec,
    RecurrentLayerSpec,
)
from statecast.models.spec import ScalingSpec
from tests.models.helpers import tiny_spec


def test_defaults_name_features_and_targets_and_retain():
    spec = tiny_spec()
    assert spec.features == ("x0", "x1") and spec.targets == ("x0",)
    assert spec.state_mode == "carry" and spec.retain == 64 and spec.window is None
    univariate = ModelSpec(1, (RecurrentLayerSpec("gru", 1, 3),), (DenseLayerSpec(3, 12),),
                           horizon=12, state_mode="window:48")
    assert univariate.features == ("y",) and univariate.window == 48
    assert univariate.retain == 48


def test_json_roundtrip_keeps_every_field():
    spec = tiny_spec(
        layers=(RecurrentLayerSpec("lstm", 2, 6, proj_size=3, peepholes=True, clip=2.0,
                                   gate_activation=ActivationSpec.of("hard_sigmoid", 1 / 6, 0.5),
                                   cell_activation=ActivationSpec.of("relu")),
                RecurrentLayerSpec("gru", 3, 3, reset_after=False)),
        targets=("x1",), forecast_mode="recursive", horizon=5, initial_state=True,
        head=(DenseLayerSpec(3, 4, ActivationSpec.of("relu")), DenseLayerSpec(4, 1)),
        scaling=ScalingSpec("standard", (1.0, 2.0), (3.0, 4.0), (2.0,), (4.0,)))
    assert ModelSpec.from_json(spec.to_json()) == spec


@pytest.mark.parametrize("changes,match", [
    ({"horizon": 3}, r"direct model emits horizon x targets values: 2 outputs but horizon 3"),
    ({"forecast_mode": "recursive", "horizon": 2}, "one value per target: 2 outputs"),
    ({"state_mode": "window:0"}, "state_mode must be 'carry' or 'window:W'"),
    ({"state_mode": "sliding"}, "state_mode must be"),
    ({"features": ("a", "a")}, "feature names must be unique"),
    ({"forecast_mode": "sideways"}, "forecast_mode must be one of"),
    ({"layers": (RecurrentLayerSpec("lstm", 2, 4), RecurrentLayerSpec("gru", 5, 3))},
     "layer 1 takes 5 inputs but receives 4"),
    ({"layers": (RecurrentLayerSpec("gru", 2, 3, proj_size=2),)}, "LSTM only"),
    ({"head": (DenseLayerSpec(4, 2),)}, "head layer 0 takes 4 inputs but receives 3"),
    ({"scaling": ScalingSpec("standard", (0.0,), (1.0,), (0.0,), (1.0,))},
     "scaling needs 2 input values"),
    ({"scaling": ScalingSpec("standard", (0.0, 0.0), (1.0, 0.0), (0.0,), (1.0,))},
     "non-zero"),
])
def test_inconsistent_specs_are_refused_with_the_reason(changes, match):
    with pytest.raises(InvalidSpec, match=match):
        tiny_spec(**changes)


def test_recursive_targets_must_be_features():
    with pytest.raises(InvalidSpec, match=r"\['load'\] are not among the features"):
        tiny_spec(forecast_mode="recursive", targets=("load", "x0"))


def test_bad_json_is_an_invalid_spec():
    with pytest.raises(InvalidSpec, match="bad model spec"):
        ModelSpec.from_json({"layers": []})
    with pytest.raises(InvalidSpec, match="unknown activation 'swish'"):
        ActivationSpec.from_json("swish")


def test_tensor_shapes_follow_the_canonical_layout():
    spec = tiny_spec(layers=(RecurrentLayerSpec("lstm", 2, 4, proj_size=3, peepholes=True),),
                     initial_state=True)
    assert spec.tensor_shapes() == {
        "layers.0.w_ih": (2, 16), "layers.0.w_hh": (3, 16), "layers.0.b_ih": (16,),
        "layers.0.b_hh": (16,), "layers.0.w_hr": (4, 3), "layers.0.peephole": (3, 4),
        "initial.0.h": (3,), "initial.0.c": (4,), "head.0.weight": (3, 2), "head.0.bias": (2,)}


def test_a_head_over_the_last_steps_applies_only_activations_windowed_runs():
    from statecast.models.spec import STEP_HEAD_ACTIVATIONS
    from statecast.models.windowed import _NUMPY_ACTIVATIONS

    assert set(_NUMPY_ACTIVATIONS) == set(STEP_HEAD_ACTIVATIONS)
    layer = RecurrentLayerSpec("lstm", 1, 4)
    head = (DenseLayerSpec(4, 3, ActivationSpec.of("hard_sigmoid")), DenseLayerSpec(3, 1))
    with pytest.raises(InvalidSpec, match=r"not \['hard_sigmoid'\]"):
        ModelSpec(input_size=1, layers=(layer,), head=head, horizon=2, head_steps=2,
                  state_mode="window:3")
