"""NeuralForecast ``LSTM``/``GRU`` imports forecast what ``NeuralForecast.predict`` does.

One ``NeuralForecast`` object holds every tiny model (named by ``alias``) and is fitted once
on three real series (statsmodels' macrodata, integer ``ds``); ``nf.predict(futr_df=...)`` is
the oracle and ``nf.save`` writes the per-model files we import. Float32 compute,
``rtol=1e-4`` relative to each series' forecast magnitude.
"""

import json
import logging
import warnings

import numpy as np
import pytest

pytestmark = pytest.mark.slow
pytest.importorskip("neuralforecast")
sm = pytest.importorskip("statsmodels.api")

import pandas as pd  # noqa: E402
from neuralforecast import NeuralForecast  # noqa: E402
from neuralforecast.losses.pytorch import DistributionLoss, MQLoss  # noqa: E402
from neuralforecast.models import GRU, LSTM  # noqa: E402

from statecast.models import ImportFailed, Model  # noqa: E402
from statecast.models.distribution import head_intervals  # noqa: E402
from statecast.models.errors import LevelUnavailable  # noqa: E402
from statecast.models.importers.neuralforecast import import_neuralforecast  # noqa: E402
from statecast.models.windowed import forecast_windows, window_outputs  # noqa: E402

for _name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric"):
    logging.getLogger(_name).setLevel(logging.ERROR)

RTOL = 1e-4
H = 4
EXOG = ["unemp", "infl", "realint"]
TRAINER = {"max_steps": 4, "enable_progress_bar": False, "enable_model_summary": False,
           "logger": False, "accelerator": "cpu", "random_seed": 0, "batch_size": 8,
           "windows_batch_size": 32}


def _frame() -> pd.DataFrame:
    """Three series of different lengths and levels, with three exogenous columns."""
    macro = sm.datasets.macrodata.load_pandas().data
    growth = np.r_[np.nan, 100.0 * np.diff(np.log(macro["realgdp"].to_numpy()))]
    targets = {"realinv": (macro["realinv"].to_numpy(), 0, 190),  # level in the thousands
               "gdp_growth": (growth, 1, 180),                   # around 0, both signs
               "tbilrate": (macro["tbilrate"].to_numpy(), 20, 195)}
    rows = []
    for uid, (values, start, _) in targets.items():
        rows.append(pd.DataFrame({
            "unique_id": uid, "ds": np.arange(start, len(macro)), "y": values[start:],
            **{name: macro[name].to_numpy()[start:] for name in EXOG}}))
    frame = pd.concat(rows, ignore_index=True)
    frame["end"] = frame["unique_id"].map({uid: end for uid, (_, _, end) in targets.items()})
    return frame


FRAME = _frame()
UIDS = ["realinv", "gdp_growth", "tbilrate"]


def history(frame: pd.DataFrame = FRAME) -> pd.DataFrame:
    return frame[frame.ds < frame.end].drop(columns="end").reset_index(drop=True)


def future_frame(frame: pd.DataFrame = FRAME) -> pd.DataFrame:
    ahead = frame[(frame.ds >= frame.end) & (frame.ds < frame.end + H)]
    return ahead[["unique_id", "ds", *EXOG]].reset_index(drop=True)


def small(cls, alias, **changes):
    fields = {"h": H, "input_size": 12, "encoder_hidden_size": 6, "decoder_hidden_size": 6,
              "encoder_n_layers": 1, "alias": alias, **TRAINER}
    fields.update(changes)
    return cls(**fields)


#: alias -> (model, oracle column suffix). Every scaler, direct and recurrent, 1 and 2
#: layers, no exogenous / hist / futr / both, MQLoss, decoder_layers=1.
CASES = {
    "lstm_identity": (small(LSTM, "lstm_identity", scaler_type="identity"), ""),
    "gru_standard_hist_2l": (small(GRU, "gru_standard_hist_2l", scaler_type="standard",
                                   encoder_n_layers=2, hist_exog_list=["unemp"]), ""),
    "lstm_robust_futr_2l": (small(LSTM, "lstm_robust_futr_2l", scaler_type="robust",
                                  encoder_n_layers=2, futr_exog_list=["infl"]), ""),
    "gru_minmax_both": (small(GRU, "gru_minmax_both", scaler_type="minmax",
                              hist_exog_list=["unemp"], futr_exog_list=["realint", "infl"]),
                        ""),
    "lstm_minmax1_both_dec1": (small(LSTM, "lstm_minmax1_both_dec1", scaler_type="minmax1",
                                     decoder_layers=1, hist_exog_list=["realint", "unemp"],
                                     futr_exog_list=["infl"]), ""),
    "gru_invariant_futr_tanh": (small(GRU, "gru_invariant_futr_tanh", scaler_type="invariant",
                                      decoder_activation="Tanh",
                                      futr_exog_list=["infl", "realint"]), ""),
    "lstm_rec_identity_2l": (small(LSTM, "lstm_rec_identity_2l", recurrent=True,
                                   scaler_type="identity", encoder_n_layers=2), ""),
    "gru_rec_standard_hist": (small(GRU, "gru_rec_standard_hist", recurrent=True,
                                    scaler_type="standard", hist_exog_list=["unemp"]), ""),
    "lstm_rec_robust_both_2l": (small(LSTM, "lstm_rec_robust_both_2l", recurrent=True,
                                      scaler_type="robust", encoder_n_layers=2,
                                      hist_exog_list=["unemp"], futr_exog_list=["infl"]), ""),
    "gru_rec_minmax1_futr": (small(GRU, "gru_rec_minmax1_futr", recurrent=True,
                                   scaler_type="minmax1", inference_input_size=8,
                                   futr_exog_list=["infl"]), ""),
    "lstm_rec_invariant_futr": (small(LSTM, "lstm_rec_invariant_futr", recurrent=True,
                                      scaler_type="invariant", futr_exog_list=["realint"]),
                                ""),
    "gru_rec_minmax_both_2l": (small(GRU, "gru_rec_minmax_both_2l", recurrent=True,
                                     scaler_type="minmax", encoder_n_layers=2,
                                     hist_exog_list=["realint"], futr_exog_list=["infl"]), ""),
    "lstm_mq": (small(LSTM, "lstm_mq", loss=MQLoss(), futr_exog_list=["infl"]), "-median"),
    "gru_rec_mq": (small(GRU, "gru_rec_mq", recurrent=True, loss=MQLoss(),
                         scaler_type="standard"), "-median"),
}
#: Saved beside them, refused on import.
REFUSED = {
    "lstm_revin": (small(LSTM, "lstm_revin", scaler_type="revin"),
                   r"scaler_type 'revin' is not supported"),
    "gru_distribution": (small(GRU, "gru_distribution", loss=DistributionLoss("Normal")),
                         r"loss 'DistributionLoss' is not supported"),
    "lstm_static": (small(LSTM, "lstm_static", stat_exog_list=["level"]),
                    r"stat_exog_list=\['level'\] is not supported"),
}


def quiet(function, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return function(*args, **kwargs)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """(the predictions of every model, the directory nf.save wrote, the fitted object)."""
    models = [model for model, _ in CASES.values()] + [model for model, _ in REFUSED.values()]
    nf = NeuralForecast(models=models, freq=1)
    static = pd.DataFrame({"unique_id": UIDS, "level": [1.0, 0.0, 2.0]})
    quiet(nf.fit, history(), static_df=static)
    predictions = quiet(nf.predict, futr_df=future_frame())
    directory = tmp_path_factory.mktemp("nf")
    quiet(nf.save, str(directory), overwrite=True)
    return predictions, directory, nf


def assert_matches(ours: np.ndarray, expected: np.ndarray) -> float:
    """Equal within RTOL of the forecast's magnitude; returns the relative difference."""
    expected = np.asarray(expected, np.float64)
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(ours, expected, rtol=RTOL, atol=RTOL * scale)
    return float(np.abs(ours - expected).max() / scale)


def window_inputs(imported, frame: pd.DataFrame = FRAME):
    """``(windows, future)`` of every series (in UIDS order), as forecast_windows takes."""
    spec = imported.spec
    windows, futures = [], []
    for uid in UIDS:
        rows = frame[frame.unique_id == uid].set_index("ds")
        end = int(rows["end"].iloc[0])
        past = rows.loc[end - spec.window:end - 1, list(spec.features)].to_numpy()
        if past.shape[0] < spec.window:  # left padding, zeros, as NeuralForecast pads
            past = np.vstack([np.zeros((spec.window - past.shape[0], past.shape[1])), past])
        windows.append(past)
        futures.append(rows.loc[end:end + H - 1, list(spec.future_features)].to_numpy())
    future = np.stack(futures).astype(np.float32) if spec.future_features else None
    return np.stack(windows).astype(np.float32), future


def our_forecast(imported, frame: pd.DataFrame = FRAME, observed=None) -> np.ndarray:
    """forecast_windows for every series (in UIDS order): ``[3, H]``."""
    windows, future = window_inputs(imported, frame)
    ours = forecast_windows(Model(imported.spec, imported.tensors), windows, future, H,
                            observed=observed)
    assert ours.shape == (len(UIDS), H, 1)
    return ours[:, :, 0]


def oracle(predictions: pd.DataFrame, column: str) -> np.ndarray:
    table = predictions.pivot(index="unique_id", columns="ds", values=column)
    return np.stack([table.loc[uid].dropna().to_numpy() for uid in UIDS])


@pytest.mark.parametrize("alias", list(CASES))
def test_forecasts_as_neuralforecast(alias, fitted):
    predictions, directory, _ = fitted
    model, suffix = CASES[alias]
    imported = import_neuralforecast(directory / f"{alias}_0.safetensors")
    spec = imported.spec
    recurrent = model.hparams.recurrent
    hist = list(model.hparams.hist_exog_list or [])
    futr = list(model.hparams.futr_exog_list or [])
    assert spec.features == ("y", *hist, *futr)
    assert spec.future_features == tuple(futr)
    window = (model.hparams.inference_input_size or 12) + 1 if recurrent else 12
    assert spec.state_mode == f"window:{window}" and spec.window == window
    assert spec.forecast_mode == ("recursive" if recurrent else "direct")
    assert spec.horizon == H
    assert spec.window_scaler.kind == model.hparams.scaler_type
    assert len(spec.layers) == model.hparams.encoder_n_layers
    assert {layer.cell for layer in spec.layers} == {type(model).__name__.lower()}
    if not recurrent:
        assert len(spec.head) == model.hparams.decoder_layers
    if suffix:
        assert spec.output.kind == "quantile" and len(spec.output.quantiles) == 5
    expected = oracle(predictions, f"{alias}{suffix}")
    ours = our_forecast(imported)
    for stream in range(len(UIDS)):
        assert_matches(ours[stream], expected[stream])


def test_recurrent_mqloss_columns_are_all_the_mean(fitted):
    """NeuralForecast's recurrent MQLoss reports the fed-back mean in every column: the
    imported point value is that mean, not a quantile."""
    predictions, directory, _ = fitted
    columns = [c for c in predictions.columns if c.startswith("gru_rec_mq-")]
    assert len(columns) == 5
    for column in columns:
        np.testing.assert_array_equal(predictions[column], predictions["gru_rec_mq-median"])
    imported = import_neuralforecast(directory / "gru_rec_mq_0.safetensors")
    assert imported.spec.output.point_index == -1


def test_mqloss_levels_are_neuralforecasts_lo_and_hi_columns(fitted):
    predictions, directory, _ = fitted
    imported = import_neuralforecast(directory / "lstm_mq_0.safetensors")
    model = Model(imported.spec, imported.tensors)
    windows, future = window_inputs(imported)
    outputs, scaling = window_outputs(model, windows, future, H)
    intervals = head_intervals(model, outputs, scaling, (80.0, 90.0))
    for name in ("lo-90", "lo-80", "hi-80", "hi-90"):
        assert_matches(intervals[name][:, :, 0], oracle(predictions, f"lstm_mq-{name}"))
    with pytest.raises(LevelUnavailable, match=r"0\.025"):
        head_intervals(model, outputs, scaling, (95.0,))
    recurrent = import_neuralforecast(directory / "gru_rec_mq_0.safetensors")
    model = Model(recurrent.spec, recurrent.tensors)
    outputs, scaling = window_outputs(model, *window_inputs(recurrent), H)
    with pytest.raises(LevelUnavailable, match="no quantiles"):
        head_intervals(model, outputs, scaling, (80.0,))


def test_direct_mqloss_median_is_not_the_other_quantiles(fitted):
    predictions, directory, _ = fitted
    imported = import_neuralforecast(directory / "lstm_mq_0.safetensors")
    quantiles = imported.spec.output.quantiles
    assert quantiles[imported.spec.output.point_index] == pytest.approx(0.5)
    ours = our_forecast(imported)
    for column in ("lstm_mq-lo-90", "lstm_mq-hi-90"):
        assert not np.allclose(ours, oracle(predictions, column), rtol=1e-3, atol=0)


def test_direct_model_fewer_steps_with_only_their_future_rows(fitted):
    predictions, directory, _ = fitted
    imported = import_neuralforecast(directory / "lstm_robust_futr_2l_0.safetensors")
    expected = oracle(predictions, "lstm_robust_futr_2l")[:, :2]  # step k reads futr[k] only
    model = Model(imported.spec, imported.tensors)
    windows, futures = [], []
    for uid in UIDS:
        rows = FRAME[FRAME.unique_id == uid].set_index("ds")
        end = int(rows["end"].iloc[0])
        windows.append(rows.loc[end - 12:end - 1, ["y", "infl"]].to_numpy())
        futures.append(rows.loc[end:end + 1, ["infl"]].to_numpy())
    ours = forecast_windows(model, np.stack(windows).astype(np.float32),
                            np.stack(futures).astype(np.float32), 2)
    for stream in range(len(UIDS)):
        assert_matches(ours[stream, :, 0], expected[stream])


@pytest.mark.parametrize("alias", list(REFUSED))
def test_refused(alias, fitted):
    _, directory, _ = fitted
    _, message = REFUSED[alias]
    with pytest.raises(ImportFailed, match=message):
        import_neuralforecast(directory / f"{alias}_0.safetensors")


def test_local_scaler_type_is_refused(tmp_path):
    nf = NeuralForecast(models=[small(LSTM, "lstm_local", max_steps=2)], freq=1,
                        local_scaler_type="standard")
    frame = history()
    quiet(nf.fit, frame[frame.unique_id == "realinv"][["unique_id", "ds", "y"]])
    quiet(nf.save, str(tmp_path), overwrite=True)
    config = json.loads((tmp_path / "configuration.json").read_text())
    assert config["configuration"]["local_scaler_type"] == "standard"
    with pytest.raises(ImportFailed, match="local_scaler_type='standard'"):
        import_neuralforecast(tmp_path / "lstm_local_0.safetensors")


SHORT = 7  # observations of gdp_growth in the short frame: fewer than any window


@pytest.fixture(scope="module")
def short_predictions(fitted):
    """Predictions for a frame where one series has fewer observations than the window
    (NeuralForecast left-pads it with zeros, left out of the window statistics)."""
    _, directory, nf = fitted
    frame = FRAME[(FRAME.unique_id != "gdp_growth") | (FRAME.ds >= FRAME.end - SHORT)]
    static = pd.DataFrame({"unique_id": UIDS, "level": [1.0, 0.0, 2.0]})
    short = quiet(nf.predict, df=history(frame), static_df=static,
                  futr_df=future_frame(frame))
    return short, directory, frame


@pytest.mark.parametrize("alias", ["lstm_identity", "gru_standard_hist_2l",
                                   "lstm_minmax1_both_dec1", "gru_rec_standard_hist",
                                   "lstm_rec_robust_both_2l", "gru_rec_minmax1_futr"])
def test_series_shorter_than_the_window(alias, short_predictions):
    short, directory, frame = short_predictions
    _, suffix = CASES[alias]
    imported = import_neuralforecast(directory / f"{alias}_0.safetensors")
    observed = np.array([imported.spec.window, SHORT, imported.spec.window])
    expected = oracle(short, f"{alias}{suffix}")
    ours = our_forecast(imported, frame, observed=observed)
    for stream in range(len(UIDS)):
        assert_matches(ours[stream], expected[stream])
