"""Darts and NeuralForecast models served like any model: imported with no flags by
``statecast import``, a new stream fed a series' last rows (and the future covariates)
answers the library's own forecast through /v1 (single and batch) and /v2, and
``statecast batch --future`` writes it; a stream without enough history is refused before
anything is stored."""

import logging
import warnings

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("darts")
pytest.importorskip("neuralforecast")
statsmodels_api = pytest.importorskip("statsmodels.api")

from statecast.service.cli import main  # noqa: E402
from statecast.service.settings import Settings  # noqa: E402
from statecast.service.startup import serving_app  # noqa: E402

pytestmark = pytest.mark.slow
SERIES = ("realinv", "realcons")
CUT, H = 190, 4
RTOL = 1e-4


def macro():
    return statsmodels_api.datasets.macrodata.load_pandas().data


def quiet():
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two NeuralForecast models (direct LSTM with historic and future exogenous inputs,
    recurrent GRU) and two Darts models (RNNModel with future covariates, BlockRNNModel
    with past and future covariates), saved, with each library's own forecasts."""
    quiet()
    from darts import TimeSeries
    from darts.models import BlockRNNModel, RNNModel
    from neuralforecast import NeuralForecast
    from neuralforecast.losses.pytorch import MQLoss
    from neuralforecast.models import GRU, LSTM

    folder = tmp_path_factory.mktemp("libraries")
    data = macro()
    frame = pd.concat([pd.DataFrame({"unique_id": name, "ds": np.arange(len(data)),
                                     "y": data[name].to_numpy(), "unemp": data["unemp"],
                                     "infl": data["infl"]}) for name in SERIES])
    trainer = dict(max_steps=5, enable_progress_bar=False, enable_model_summary=False,
                   logger=False, accelerator="cpu")
    nf = NeuralForecast(models=[
        LSTM(h=H, input_size=12, encoder_hidden_size=8, decoder_hidden_size=8,
             scaler_type="robust", hist_exog_list=["unemp"], futr_exog_list=["infl"],
             **trainer),
        GRU(h=H, input_size=10, encoder_hidden_size=8, decoder_hidden_size=8,
            recurrent=True, scaler_type="standard", futr_exog_list=["infl"], alias="GRUrec",
            **trainer),
        LSTM(h=H, input_size=12, encoder_hidden_size=8, decoder_hidden_size=8,
             scaler_type="robust", hist_exog_list=["unemp"], futr_exog_list=["infl"],
             loss=MQLoss(level=[80, 90]), alias="LSTMmq", **trainer)], freq=1)
    nf.fit(frame[frame.ds < CUT])
    future = frame[(frame.ds >= CUT) & (frame.ds < CUT + H)][["unique_id", "ds", "infl"]]
    expected = nf.predict(futr_df=future)
    nf.save(str(folder / "nf"), overwrite=True)
    y = ((data["realinv"] - data["realinv"].mean()) / data["realinv"].std()).to_numpy(
        np.float32)
    covariates = data[["unemp", "infl"]].to_numpy(np.float32)
    series = TimeSeries.from_values(y)
    kw = dict(n_epochs=1, random_state=0, pl_trainer_kwargs={
        "accelerator": "cpu", "enable_progress_bar": False, "logger": False,
        "enable_model_summary": False})
    rnn = RNNModel(input_chunk_length=12, model="LSTM", hidden_dim=8, n_rnn_layers=2,
                   training_length=20, **kw)
    rnn.fit(series[:150], future_covariates=TimeSeries.from_values(covariates))
    rnn.save(str(folder / "rnn.pt"))
    block = BlockRNNModel(input_chunk_length=12, output_chunk_length=H, model="GRU",
                          hidden_dim=8, hidden_fc_sizes=[6], **kw)
    block.fit(series[:150], past_covariates=TimeSeries.from_values(covariates[:, :1]),
              future_covariates=TimeSeries.from_values(covariates[:, 1:]))
    block.save(str(folder / "block.pt"))
    from darts.utils.likelihood_models import GaussianLikelihood

    gaussian = BlockRNNModel(input_chunk_length=12, output_chunk_length=H, model="LSTM",
                             hidden_dim=8, likelihood=GaussianLikelihood(), **kw)
    gaussian.fit(series[:150])
    gaussian.save(str(folder / "gaussian.pt"))
    parameters = gaussian.predict(H, series=series[:150], predict_likelihood_parameters=True)
    darts_expected = {
        "drnn": rnn.predict(H, series=series[:150], future_covariates=TimeSeries.from_values(
            covariates)).values()[:, 0],
        "dblock": block.predict(H, series=series[:150],
                                past_covariates=TimeSeries.from_values(covariates[:, :1]),
                                future_covariates=TimeSeries.from_values(covariates[:, 1:])
                                ).values()[:, 0],
        "dgauss": {name: parameters[name].values()[:, 0] for name in ("0_mu", "0_sigma")}}
    registry = folder / "registry"
    for name, path in (("nflstm", folder / "nf" / "LSTM_0.safetensors"),
                       ("nfgru", folder / "nf" / "GRUrec_0.safetensors"),
                       ("nfmq", folder / "nf" / "LSTMmq_0.safetensors"),
                       ("drnn", folder / "rnn.pt"), ("dblock", folder / "block.pt.ckpt"),
                       ("dgauss", folder / "gaussian.pt")):
        assert main(["import", str(path), "--name", name, "--registry", str(registry)]) == 0
    return {"folder": folder, "registry": registry, "frame": frame, "future": future,
            "nf": expected, "darts": darts_expected, "y": y, "covariates": covariates}


@pytest.fixture()
def client(trained, tmp_path):
    app = serving_app(Settings(registry=trained["registry"], store=f"sqlite:{tmp_path / 's.db'}",
                              max_window=500))
    yield app.test_client()
    app.extensions["statecast"].close()


NF_CASES = {"nflstm": ("LSTM", ["y", "unemp", "infl"], 12),
            "nfgru": ("GRUrec", ["y", "infl"], 11),
            "nfmq": ("LSTMmq-median", ["y", "unemp", "infl"], 12)}
MQ_COLUMNS = ("lo-90", "lo-80", "hi-80", "hi-90")


def nf_body(trained, model, series):
    _, columns, window = NF_CASES[model]
    frame = trained["frame"]
    rows = frame[(frame.unique_id == series) & (frame.ds < CUT)][columns].to_numpy()[-window:]
    future = trained["future"]
    return {"start": 0, "window": rows.tolist(), "horizon": H,
            "future": future[future.unique_id == series][["infl"]].to_numpy().tolist()}


def nf_expected(trained, model, series):
    column = NF_CASES[model][0]
    expected = trained["nf"]
    return expected[expected.unique_id == series][column].to_numpy()


@pytest.mark.parametrize("model", sorted(NF_CASES))
def test_neuralforecast_models_answer_the_library_forecast_on_v1(client, trained, model):
    for series in SERIES:
        response = client.post(f"/v1/models/{model}/streams/{series}/forecast",
                               json=nf_body(trained, model, series))
        assert response.status_code == 200, response.get_json()
        forecast = np.asarray(response.get_json()["forecast"])[:, 0]
        np.testing.assert_allclose(forecast, nf_expected(trained, model, series), rtol=RTOL)
    batch = client.post(f"/v1/models/{model}/forecast", json={"items": [
        {"stream": f"batch-{series}", **nf_body(trained, model, series)} for series in SERIES]})
    for item, series in zip(batch.get_json()["items"], SERIES, strict=True):
        np.testing.assert_allclose(np.asarray(item["forecast"])[:, 0],
                                   nf_expected(trained, model, series), rtol=RTOL)


def test_quantile_heads_give_neuralforecasts_levels(client, trained, tmp_path):
    expected = trained["nf"]
    for series in SERIES:
        mine = expected[expected.unique_id == series]
        body = {**nf_body(trained, "nfmq", series), "level": [80, 90]}
        response = client.post(f"/v1/models/nfmq/streams/{series}/forecast", json=body)
        assert response.status_code == 200, response.get_json()
        intervals = response.get_json()["intervals"]
        assert sorted(intervals) == sorted(MQ_COLUMNS)
        for name in MQ_COLUMNS:
            np.testing.assert_allclose(np.asarray(intervals[name])[:, 0],
                                       mine[f"LSTMmq-{name}"].to_numpy(), rtol=RTOL)
    refused = client.post("/v1/models/nfmq/streams/other/forecast", json={
        **nf_body(trained, "nfmq", SERIES[0]), "level": [95]})
    assert refused.get_json()["error"]["code"] == "level_unavailable"
    frame, future = trained["frame"], trained["future"]
    frame[frame.ds < CUT].to_csv(tmp_path / "history.csv", index=False)
    future.to_csv(tmp_path / "future.csv", index=False)
    assert main(["batch", "--registry", str(trained["registry"]), "--model", "nfmq",
                 "--input", str(tmp_path / "history.csv"), "--output", str(tmp_path / "o.csv"),
                 "--h", str(H), "--future", str(tmp_path / "future.csv"), "--level", "90",
                 "80", "--quiet"]) == 0
    written = pd.read_csv(tmp_path / "o.csv")
    assert list(written.columns) == ["unique_id", "ds", "nfmq",
                                     *(f"nfmq-{name}" for name in MQ_COLUMNS)]
    for series in SERIES:
        ours, theirs = written[written.unique_id == series], expected[
            expected.unique_id == series]
        for name in MQ_COLUMNS:
            np.testing.assert_allclose(ours[f"nfmq-{name}"].to_numpy(),
                                       theirs[f"LSTMmq-{name}"].to_numpy(), rtol=RTOL)


def test_v2_infer_takes_window_and_future_tensors(client, trained):
    body = nf_body(trained, "nflstm", "realinv")
    window, future = np.asarray(body["window"]), np.asarray(body["future"])
    response = client.post("/v2/models/nflstm/infer", json={"inputs": [
        {"name": "window", "datatype": "FP32", "shape": [1, *window.shape],
         "data": window.ravel().tolist()},
        {"name": "future", "datatype": "FP32", "shape": [1, *future.shape],
         "data": future.ravel().tolist()}]})
    assert response.status_code == 200, response.get_json()
    forecast = np.asarray(response.get_json()["outputs"][0]["data"])
    np.testing.assert_allclose(forecast, nf_expected(trained, "nflstm", "realinv"), rtol=RTOL)


def test_darts_models_pair_rows_as_darts_does(client, trained):
    y, covariates = trained["y"], trained["covariates"]
    rows = np.c_[y[138:150], covariates[138:150]].tolist()
    for model, future in (("drnn", covariates[150:150 + H]),
                          ("dblock", covariates[150:150 + H, 1:])):
        response = client.post(f"/v1/models/{model}/streams/s/forecast", json={
            "start": 0, "window": rows, "horizon": H, "future": future.tolist()})
        assert response.status_code == 200, response.get_json()
        np.testing.assert_allclose(np.asarray(response.get_json()["forecast"])[:, 0],
                                   trained["darts"][model], rtol=RTOL, atol=1e-6)


def test_gaussian_heads_give_darts_likelihood_intervals(client, trained, tmp_path):
    """mu -+ z sigma of Darts' own likelihood parameters, through /v1 and the batch job."""
    from statistics import NormalDist

    y, expected = trained["y"], trained["darts"]["dgauss"]
    mu, sigma = expected["0_mu"], expected["0_sigma"]
    response = client.post("/v1/models/dgauss/streams/g/forecast", json={
        "start": 0, "window": y[138:150].tolist(), "horizon": H, "level": [80, 95]})
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    np.testing.assert_allclose(np.asarray(body["forecast"])[:, 0], mu, rtol=RTOL, atol=1e-6)
    for level in (80, 95):
        z = NormalDist().inv_cdf(1 - (100 - level) / 200)
        for side, sign in (("lo", -1), ("hi", 1)):
            np.testing.assert_allclose(np.asarray(body["intervals"][f"{side}-{level}"])[:, 0],
                                       mu + sign * z * sigma, rtol=RTOL, atol=1e-5)
    pd.DataFrame({"unique_id": "g", "ds": np.arange(150), "y": y[:150]}).to_csv(
        tmp_path / "history.csv", index=False)
    assert main(["batch", "--registry", str(trained["registry"]), "--model", "dgauss",
                 "--input", str(tmp_path / "history.csv"), "--output",
                 str(tmp_path / "out.csv"), "--h", str(H), "--level", "80", "--quiet"]) == 0
    written = pd.read_csv(tmp_path / "out.csv")
    z = NormalDist().inv_cdf(0.9)
    np.testing.assert_allclose(written["dgauss-lo-80"], mu - z * sigma, rtol=RTOL, atol=1e-5)
    np.testing.assert_allclose(written["dgauss-hi-80"], mu + z * sigma, rtol=RTOL, atol=1e-5)


def test_too_little_history_is_refused_and_stores_nothing(client, trained):
    body = nf_body(trained, "nflstm", "realinv")
    body["window"] = body["window"][-5:]
    response = client.post("/v1/models/nflstm/streams/short/forecast", json=body)
    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == "insufficient_history"
    assert client.get("/v1/models/nflstm/streams/short").status_code == 404
    missing = nf_body(trained, "nflstm", "realinv")
    del missing["future"]
    response = client.post("/v1/models/nflstm/streams/nofuture/forecast", json=missing)
    assert response.get_json()["error"]["code"] == "missing_future"


def test_the_batch_job_reads_future_covariates(trained, tmp_path):
    frame, future = trained["frame"], trained["future"]
    history = tmp_path / "history.csv"
    frame[frame.ds < CUT].to_csv(history, index=False)
    future_path = tmp_path / "future.csv"
    future.to_csv(future_path, index=False)
    out = tmp_path / "out.csv"
    assert main(["batch", "--registry", str(trained["registry"]), "--model", "nflstm",
                 "--input", str(history), "--output", str(out), "--h", str(H), "--future",
                 str(future_path), "--quiet"]) == 0
    written = pd.read_csv(out)
    assert list(written.columns) == ["unique_id", "ds", "nflstm"]
    for series in SERIES:
        np.testing.assert_allclose(written[written.unique_id == series]["nflstm"].to_numpy(),
                                   nf_expected(trained, "nflstm", series), rtol=RTOL)
    future.iloc[:-1].to_csv(future_path, index=False)
    assert main(["batch", "--registry", str(trained["registry"]), "--model", "nflstm",
                 "--input", str(history), "--output", str(tmp_path / "x.csv"), "--h", str(H),
                 "--future", str(future_path), "--quiet"]) != 0
    assert not (tmp_path / "x.csv").exists()


def test_window_models_backtest_and_calibrate_as_they_forecast(client, trained, tmp_path):
    """A backtest's last window of a NeuralForecast model is the library's own forecast
    (the covariates of its steps read from the history), so such a model can be calibrated
    and then answers levels."""
    from statecast.service.batch import forecast

    frame = trained["frame"]
    seen = frame[frame.ds < CUT + H]
    backtested = forecast(seen, "nflstm", H, registry=trained["registry"], n_windows=2,
                          step_size=H)
    for series in SERIES:
        last = backtested[(backtested.unique_id == series)
                          & (backtested.cutoff == CUT - 1)].sort_values("ds")
        np.testing.assert_allclose(last["nflstm"].to_numpy(), nf_expected(
            trained, "nflstm", series), rtol=RTOL)
    seen.to_csv(tmp_path / "history.csv", index=False)
    assert main(["calibrate", "--registry", str(trained["registry"]), "--model", "nflstm",
                 "--input", str(tmp_path / "history.csv"), "--n-windows", "4"]) == 0
    body = {**nf_body(trained, "nflstm", SERIES[0]), "level": [80]}
    response = client.post("/v1/models/nflstm/streams/calibrated/forecast", json=body)
    assert response.status_code == 200, response.get_json()
    intervals = response.get_json()["intervals"]
    forecast_ = np.asarray(response.get_json()["forecast"])
    assert (np.asarray(intervals["lo-80"]) <= forecast_ + 1e-6).all()
    assert (forecast_ <= np.asarray(intervals["hi-80"]) + 1e-6).all()
