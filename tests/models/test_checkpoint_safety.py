"""Checkpoints are read without running anything they name: a pickle whose ``__reduce__``
calls ``os.system``, ``eval`` or ``exec`` yields an inert stand-in (or a refusal), never a
side effect."""

import builtins
import os
import pickle
import subprocess

import numpy as np
import pytest
import torch

from statecast.models import ImportFailed
from statecast.models.importers.checkpoint import StandIn, load_checkpoint
from statecast.models.importers.darts import import_darts


class Payload:
    """Pickles as ``function(argument)``: what an attacker's checkpoint would run."""

    def __init__(self, function, argument):
        self.function = function
        self.argument = argument

    def __reduce__(self):
        return (self.function, (self.argument,))


def cases(tmp_path):
    """name -> (payload, its argument, the name its function pickles as or None when
    PyTorch refuses its module outright) for payloads that would create ``pwned``."""
    marker = tmp_path / "pwned"
    code = f"open({str(marker)!r}, 'w').close()"
    found = {
        # os and posix are on PyTorch's blocklist: refused even when allowlisted
        "os.system": (os.system, f"touch {marker}", None),
        "eval": (builtins.eval, code, "builtins.eval"),
        "exec": (builtins.exec, code, "builtins.exec"),
        "subprocess": (subprocess.check_call, ["touch", str(marker)], ".check_call"),
    }
    return {name: (Payload(function, argument), argument, qualified)
            for name, (function, argument, qualified) in found.items()}


def darts_like(extra):
    """A Lightning checkpoint shaped like a Darts RNNModel's, carrying ``extra``."""
    rnn = torch.nn.LSTM(1, 4, batch_first=True)
    state = {f"rnn.{key}": value for key, value in rnn.state_dict().items()}
    state["V.weight"] = torch.zeros(1, 4)
    state["V.bias"] = torch.zeros(1)
    return {"hyper_parameters": {"input_chunk_length": 6, "hidden_dim": 4, "name": "LSTM",
                                 "num_layers": 1, "target_size": 1, "nr_params": 1,
                                 "output_chunk_length": 1, "likelihood": None,
                                 "loss_fn": extra,
                                 "train_sample_shape": [(6, 1), None, None, None, None,
                                                        (6, 1)]},
            "state_dict": state, "callbacks": {"evil": extra}}


NAMES = ["os.system", "eval", "exec", "subprocess"]


@pytest.mark.parametrize("name", NAMES)
def test_load_checkpoint_builds_a_stand_in_and_runs_nothing(name, tmp_path):
    payload, argument, qualified = cases(tmp_path)[name]
    path = tmp_path / "evil.pt"
    torch.save({"weights": torch.ones(2), "payload": payload}, path)
    if qualified is None:
        with pytest.raises(ImportFailed, match="cannot read the checkpoint safely"):
            load_checkpoint(path)
    else:
        loaded = load_checkpoint(path)
        stand_in = loaded["payload"]
        assert isinstance(stand_in, StandIn)
        assert stand_in.qualified_name.endswith(qualified)
        assert stand_in.args == (argument,)  # recorded, never called
        np.testing.assert_array_equal(loaded["weights"].numpy(), np.ones(2))
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("name", NAMES)
def test_nested_payload_in_a_list_and_an_object_state(name, tmp_path):
    payload, _, qualified = cases(tmp_path)[name]
    path = tmp_path / "nested.pt"
    torch.save({"a": [1, {"b": payload}], "module": torch.nn.Linear(2, 1)}, path)
    if qualified is None:
        with pytest.raises(ImportFailed, match="cannot read the checkpoint safely"):
            load_checkpoint(path)
    else:
        loaded = load_checkpoint(path)
        assert isinstance(loaded["a"][1]["b"], StandIn)
        assert isinstance(loaded["module"], StandIn)  # even torch's own classes are inert
        assert loaded["module"].qualified_name == "torch.nn.modules.linear.Linear"
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("darts_shaped", [True, False])
def test_import_darts_ckpt_with_a_payload(name, darts_shaped, tmp_path):
    payload, _, qualified = cases(tmp_path)[name]
    path = tmp_path / "model.pt.ckpt"
    torch.save(darts_like(payload) if darts_shaped else {"payload": payload}, path)
    if qualified is None:
        with pytest.raises(ImportFailed, match="cannot read the checkpoint safely"):
            import_darts(path)
    elif darts_shaped:  # inert: the weights import, the payload sat in unused fields
        imported = import_darts(path)
        assert imported.spec.window == 6 and imported.spec.forecast_mode == "recursive"
        assert imported.spec.state_mode == "window:6"
    else:
        with pytest.raises(ImportFailed, match="not a Lightning checkpoint"):
            import_darts(path)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("name", NAMES)
def test_import_darts_model_pt_with_a_payload(name, tmp_path):
    """The pickled model object (``model.pt``) is read too, for its encoders: inertly."""
    payload, _, qualified = cases(tmp_path)[name]
    torch.save(darts_like(None), tmp_path / "model.pt.ckpt")
    torch.save({"model": payload, "add_encoders": payload}, tmp_path / "model.pt")
    if qualified is None:
        with pytest.raises(ImportFailed, match="cannot read the checkpoint safely"):
            import_darts(tmp_path / "model.pt")
    else:
        assert import_darts(tmp_path / "model.pt").spec.window == 6
    assert not (tmp_path / "pwned").exists()


def test_payload_whose_stand_in_is_used_as_a_tensor_is_refused(tmp_path):
    """A payload where a tensor is expected: refused by name, still nothing run."""
    payload, _, _ = cases(tmp_path)["exec"]
    checkpoint = darts_like(None)
    checkpoint["state_dict"]["V.weight"] = payload
    torch.save(checkpoint, tmp_path / "model.pt.ckpt")
    with pytest.raises(ImportFailed):
        import_darts(tmp_path / "model.pt.ckpt")
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("writer", ["pickle", "torch-legacy"])
def test_non_zip_pickles_are_refused_unread(writer, tmp_path):
    payload, _, _ = cases(tmp_path)["os.system"]
    path = tmp_path / "legacy.ckpt"
    if writer == "pickle":
        path.write_bytes(pickle.dumps({"payload": payload}))
    else:
        torch.save({"payload": payload}, path, _use_new_zipfile_serialization=False)
    assert path.read_bytes()[:4] != b"PK\x03\x04"
    with pytest.raises(ImportFailed, match=r"not a torch\.save zip file"):
        load_checkpoint(path)
    with pytest.raises(ImportFailed, match=r"not a torch\.save zip file"):
        import_darts(path)
    assert not (tmp_path / "pwned").exists()


def test_the_payloads_would_have_run(tmp_path):
    """Control: plain pickle does run these payloads and create the marker, so the
    assertions above test something real (eval's payload, the cheapest, stands for all)."""
    payload, _, _ = cases(tmp_path)["eval"]
    pickle.loads(pickle.dumps(payload))  # deliberate: the marker is in tmp_path
    assert (tmp_path / "pwned").exists()


def test_a_darts_model_pt_without_its_checkpoint_is_refused(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"model_params": {}}, path)
    with pytest.raises(ImportFailed, match=r"holds no weights: Darts writes them to "
                                           r"model\.pt\.ckpt"):
        import_darts(path)
