"""One importer entry, ``statecast.models.importers.import_file``, behind the command line
and the admin API: both take the same files the same way."""

import io

import numpy as np
import pytest
import torch

from statecast.models import Registry
from statecast.models.errors import ImportFailed
from statecast.models.importers import ForecastOptions, import_file, import_pytorch
from statecast.service.cli import main
from statecast.service.settings import Settings
from statecast.service.startup import serving_app

TOKEN = "import-token"


@pytest.fixture()
def gru_file(tmp_path):
    torch.manual_seed(3)
    net = torch.nn.Module()
    net.rnn = torch.nn.GRU(1, 5, batch_first=True)
    net.fc = torch.nn.Linear(5, 2)
    path = tmp_path / "gru.pt"
    torch.save(net.state_dict(), path)
    return path


def test_a_framework_file_imports_as_its_importer_does(gru_file, tmp_path):
    options = ForecastOptions(horizon=2)
    ours = import_file(gru_file, options=options, cell="gru")
    theirs = import_pytorch(gru_file, options, cell="gru")
    assert ours.spec == theirs.spec and ours.source == theirs.source
    assert ours.tensors.keys() == theirs.tensors.keys()
    for key, value in theirs.tensors.items():
        np.testing.assert_array_equal(ours.tensors[key], value)
    renamed = tmp_path / "gru.weights"
    renamed.write_bytes(gru_file.read_bytes())
    with pytest.raises(ImportFailed, match=r"cannot tell the format of gru\.weights"):
        import_file(renamed, options=options)
    assert import_file(renamed, file_format="torch", options=options).spec == ours.spec


def test_the_command_line_and_the_admin_api_publish_the_same_model(gru_file, tmp_path):
    cli_registry = tmp_path / "cli-registry"
    assert main(["import", str(gru_file), "--name", "gru", "--registry", str(cli_registry),
                 "--horizon", "2", "--cell", "gru"]) == 0
    app = serving_app(Settings(registry=tmp_path / "api-registry", store="memory",
                               admin_token=TOKEN, access_log=False), warm=False)
    try:
        response = app.test_client().post(
            "/v1/admin/models/gru/versions", headers={"Authorization": f"Bearer {TOKEN}"},
            data={"file": (io.BytesIO(gru_file.read_bytes()), "gru.pt"), "horizon": "2",
                  "cell": "gru"}, content_type="multipart/form-data")
        assert response.status_code == 201, response.get_json()
    finally:
        app.extensions["statecast"].close()
    by_cli = Registry(cli_registry).load("gru")
    by_api = Registry(tmp_path / "api-registry").load("gru")
    assert by_cli.spec == by_api.spec
    for key, value in by_cli.tensors.items():
        np.testing.assert_array_equal(by_api.tensors[key], value)
