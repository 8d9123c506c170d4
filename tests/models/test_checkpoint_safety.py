"""Pickled checkpoints are read without running anything they name: a ``__reduce__`` that
would run a shell command or ``exec`` builds an inert stand-in instead."""

import builtins
import os
import pickle

import pytest
import torch

from models import ImportFailed
from models.importers.checkpoint import StandIn, load_checkpoint
from models.importers.darts import import_darts


class Shell:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class Exec:
    def __init__(self, code):
        self.code = code

    def __reduce__(self):
        return (builtins.exec, (self.code,))


@pytest.mark.parametrize("make", [
    lambda marker: Shell(f"touch {marker}"),
    lambda marker: Exec(f"open({str(marker)!r}, 'w').write('x')"),
])
def test_a_malicious_reduce_builds_an_inert_stand_in(tmp_path, make):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"rnn.weight_ih_l0": torch.zeros(4, 1)},
                "hyper_parameters": {"input_chunk_length": 3, "hidden_dim": 1,
                                     "name": "LSTM", "payload": make(marker)}}, path)
    try:  # PyTorch blocks some modules (os, posix) outright: refused is as good as inert
        loaded = load_checkpoint(path)
    except ImportFailed as error:
        assert "cannot read the checkpoint safely" in str(error)
    else:
        payload = loaded["hyper_parameters"]["payload"]
        assert isinstance(payload, StandIn)
        assert payload.qualified_name == "builtins.exec"
    assert not marker.exists()
    with pytest.raises(ImportFailed):
        import_darts(path)
    assert not marker.exists()


def test_legacy_pickles_are_refused_unread(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "legacy.ckpt"
    path.write_bytes(pickle.dumps(Shell(f"touch {marker}")))
    with pytest.raises(ImportFailed, match=r"not a torch\.save zip file"):
        load_checkpoint(path)
    assert not marker.exists()


def test_a_darts_model_pt_without_its_checkpoint_is_refused(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"model_params": {}}, path)
    with pytest.raises(ImportFailed, match=r"holds no weights: Darts writes them to "
                                           r"model\.pt\.ckpt"):
        import_darts(path)
