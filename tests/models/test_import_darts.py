"""Darts ``RNNModel``/``BlockRNNModel`` imports forecast what Darts' own ``predict`` does.

Each case trains a tiny model on real data (statsmodels' macrodata), saves it with
``model.save`` and compares our window forecast with Darts' ``predict`` on the same model:
float32 compute, ``rtol=1e-4`` relative to the forecast's magnitude.
"""

import logging
import shutil
import warnings
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pytest

pytestmark = pytest.mark.slow
darts = pytest.importorskip("darts")
sm = pytest.importorskip("statsmodels.api")

from darts import TimeSeries  # noqa: E402
from darts.models import BlockRNNModel, RNNModel  # noqa: E402
from darts.utils.likelihood_models import GaussianLikelihood, QuantileRegression  # noqa: E402

from statecast.models import ImportFailed, Model  # noqa: E402
from statecast.models.distribution import head_intervals  # noqa: E402
from statecast.models.importers.darts import import_darts  # noqa: E402
from statecast.models.windowed import forecast_windows, window_outputs  # noqa: E402

logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
logging.getLogger("lightning").setLevel(logging.ERROR)
logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)

RTOL = 1e-4
TRAINER = {"accelerator": "cpu", "enable_progress_bar": False, "logger": False,
           "enable_model_summary": False}

_MACRO = sm.datasets.macrodata.load_pandas().data


def _growth(column: str) -> np.ndarray:
    values = _MACRO[column].to_numpy(np.float64)
    return 100.0 * np.diff(np.log(values))


#: Quarterly growth (%) of three macro series: targets of 202 steps each.
TARGETS = [_growth("realinv"), _growth("realgdp"), _growth("realcons")]
#: Covariates aligned with them (unemployment rate, inflation), raw units.
COVARIATES = _MACRO[["unemp", "infl"]].to_numpy(np.float64)[1:]
#: Where each series' history ends (several series: different lengths).
ENDS = [150, 141, 163]


def kwargs(**changes):
    fields = {"n_epochs": 1, "random_state": 0, "batch_size": 32, "hidden_dim": 6,
              "pl_trainer_kwargs": TRAINER}
    fields.update(changes)
    return fields


def ts(values: np.ndarray, dtype=np.float32) -> TimeSeries:
    return TimeSeries.from_values(np.asarray(values, dtype))


def assert_matches(ours: np.ndarray, expected: np.ndarray) -> float:
    """Equal within RTOL of the forecast's magnitude; returns the relative difference."""
    expected = np.asarray(expected, np.float64)
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(ours, expected, rtol=RTOL, atol=RTOL * scale)
    return float(np.abs(ours - expected).max() / scale)


def save(model, tmp_path_factory, name: str) -> Path:
    path = tmp_path_factory.mktemp(name) / "model.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save(str(path))
    assert path.is_file() and Path(f"{path}.ckpt").is_file()
    return path


def import_both(path: Path):
    """The import from ``model.pt`` and from ``model.pt.ckpt`` agree; returns one of them."""
    from_pt = import_darts(path)
    from_ckpt = import_darts(Path(f"{path}.ckpt"))
    assert from_pt.spec == from_ckpt.spec
    assert sorted(from_pt.tensors) == sorted(from_ckpt.tensors)
    for key, value in from_pt.tensors.items():
        np.testing.assert_array_equal(value, from_ckpt.tensors[key])
    assert from_pt.source["framework"] == "darts"
    return from_pt


def covariate_slices(past: list[int], future: list[int]):
    past_cov = COVARIATES[:, past] if past else None
    future_cov = COVARIATES[:, future] if future else None
    return past_cov, future_cov


def our_forecast(imported, ends, targets, past_cov, future_cov, n, future_rows=None,
                 levels=()):
    """forecast_windows for each series ending at ends[i]: ``[streams, n, 1]``; with
    ``levels``, the head's intervals instead (``{"lo-80": [streams, n, 1], ...}``)."""
    model = Model(imported.spec, imported.tensors)
    width = imported.spec.window
    windows, futures = [], []
    for end, target in zip(ends, targets, strict=True):
        columns = [target[end - width:end, None]]
        if past_cov is not None:
            columns.append(past_cov[end - width:end])
        if future_cov is not None:
            columns.append(future_cov[end - width:end])
            futures.append(future_cov[end:end + (future_rows or n)])
        windows.append(np.concatenate(columns, axis=1))
    future = np.stack(futures).astype(np.float32) if futures else None
    if levels:
        outputs, scaling = window_outputs(model, np.stack(windows).astype(np.float32), future,
                                          n)
        return head_intervals(model, outputs, scaling, levels)
    return forecast_windows(model, np.stack(windows).astype(np.float32), future, n)


def series_and_covariates(targets, ends, past_cov, future_cov, dtype):
    """Darts series of each target up to its end, and the covariates for each of them."""
    series = [ts(target[:end], dtype) for end, target in zip(ends, targets, strict=True)]
    covs = {}
    if past_cov is not None:
        covs["past_covariates"] = [ts(past_cov, dtype)] * len(series)
    if future_cov is not None:
        covs["future_covariates"] = [ts(future_cov, dtype)] * len(series)
    return series, covs


def darts_predict(model, ends, targets, past_cov, future_cov, n, dtype=np.float32,
                  **predict_kwargs):
    """Darts' own forecasts for the series ending at ``ends``: ``[streams, n, columns]``."""
    series, covs = series_and_covariates(targets, ends, past_cov, future_cov, dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        predictions = model.predict(n, series=series, **covs, **predict_kwargs)
    return predictions, np.stack([p.values() for p in predictions])


def assert_each_series_as_darts(model, imported, past_cov, future_cov, n) -> np.ndarray:
    """Our forecast of each of the series ending at ENDS equals Darts' predict for the
    list of them; returns ours ``[streams, n, 1]``."""
    predictions, expected = darts_predict(model, ENDS, TARGETS, past_cov, future_cov, n)
    assert len(predictions) == len(ENDS)
    ours = our_forecast(imported, ENDS, TARGETS, past_cov, future_cov, n)
    for stream in range(len(ENDS)):
        assert_matches(ours[stream], expected[stream])
    return ours


def fit(model, targets, ends, past_cov, future_cov, dtype=np.float32):
    series, covs = series_and_covariates(targets, ends, past_cov, future_cov, dtype)
    if len(series) == 1:
        series = series[0]
        covs = {key: value[0] for key, value in covs.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(series, **covs)
    return model


# --- RNNModel: recursive, covariates at t+1 beside the target at t ----------------------

RNN_CASES = {
    "lstm-1-layer": dict(model="LSTM", n_rnn_layers=1, future=[]),
    "gru-1-layer-future": dict(model="GRU", n_rnn_layers=1, future=[0, 1]),
    "lstm-2-layers-future": dict(model="LSTM", n_rnn_layers=2, future=[1]),
    "gru-2-layers": dict(model="GRU", n_rnn_layers=2, future=[]),
}


@pytest.mark.parametrize("case", list(RNN_CASES))
def test_rnn_model_forecasts_as_darts(case, tmp_path_factory):
    config = dict(RNN_CASES[case])
    future = config.pop("future")
    _, future_cov = covariate_slices([], future)
    model = fit(RNNModel(input_chunk_length=12, training_length=16, **kwargs(**config)),
                TARGETS[:1], ENDS[:1], None, future_cov)
    imported = import_both(save(model, tmp_path_factory, case))
    spec = imported.spec
    assert spec.state_mode == "window:12" and spec.window == 12
    assert spec.forecast_mode == "recursive"
    assert [layer.cell for layer in spec.layers] == [config["model"].lower()] * \
        config["n_rnn_layers"]
    assert spec.features == ("y", *(f"future_{i + 1}" for i in range(len(future))))
    assert spec.future_features == spec.features[1:]
    assert imported.source["class"] == "RNNModel"
    _, expected = darts_predict(model, ENDS[:1], TARGETS[:1], None, future_cov, 6)
    ours = our_forecast(imported, ENDS[:1], TARGETS[:1], None, future_cov, 6)
    assert ours.shape == (1, 6, 1)
    assert_matches(ours, expected)


@pytest.fixture(scope="module")
def rnn_several_series(tmp_path_factory):
    """An LSTM trained on three series with a future covariate."""
    _, future_cov = covariate_slices([], [0, 1])
    model = fit(RNNModel(input_chunk_length=10, training_length=14,
                         **kwargs(model="LSTM", n_rnn_layers=2)),
                TARGETS, ENDS, None, future_cov)
    path = save(model, tmp_path_factory, "rnn-several")
    return model, import_both(path), future_cov, path


def test_rnn_model_several_series_each_as_darts(rnn_several_series):
    model, imported, future_cov, _ = rnn_several_series
    ours = assert_each_series_as_darts(model, imported, None, future_cov, 5)
    assert not np.allclose(ours[0], ours[1])


def test_rnn_model_one_stream_at_a_time_equals_the_batch(rnn_several_series):
    _, imported, future_cov, _ = rnn_several_series
    batch = our_forecast(imported, ENDS, TARGETS, None, future_cov, 5)
    for stream in range(3):
        alone = our_forecast(imported, ENDS[stream:stream + 1], TARGETS[stream:stream + 1],
                             None, future_cov, 5)
        np.testing.assert_allclose(alone[0], batch[stream], rtol=1e-6, atol=1e-6)


def assert_levels_as_darts(imported, predictions, values, ends, targets, past_cov, future_cov,
                           n, future_rows=None):
    """The head's intervals equal Darts' likelihood parameters: ``mu -+ z sigma`` (levels
    80 and 95) or the quantiles a level needs (levels 50 and 80)."""
    components = list(predictions[0].components)

    def column(name):
        return values[:, :, components.index(name)].astype(np.float64)

    gaussian = imported.spec.output.kind == "gaussian"
    levels = (80.0, 95.0) if gaussian else (50.0, 80.0)
    ours = our_forecast(imported, ends, targets, past_cov, future_cov, n, future_rows, levels)
    for level in levels:
        if gaussian:
            z = NormalDist().inv_cdf(1 - (100 - level) / 200)
            low = column("0_mu") - z * column("0_sigma")
            high = column("0_mu") + z * column("0_sigma")
        else:
            q = (100 - level) / 200
            low, high = column(f"0_q{q:.3f}"), column(f"0_q{1 - q:.3f}")
        assert_matches(ours[f"lo-{level:g}"][:, :, 0], low)
        assert_matches(ours[f"hi-{level:g}"][:, :, 0], high)


LIKELIHOODS = {
    "gaussian": (GaussianLikelihood, "0_mu", "gaussian"),
    "quantile": (QuantileRegression, "0_q0.500", "quantile"),
}


@pytest.mark.parametrize("name", list(LIKELIHOODS))
def test_rnn_model_likelihood_point_value_is_darts_mu_or_median(name, tmp_path_factory):
    likelihood, column, kind = LIKELIHOODS[name]
    _, future_cov = covariate_slices([], [1])
    model = fit(RNNModel(input_chunk_length=12, training_length=16,
                         **kwargs(model="GRU" if name == "gaussian" else "LSTM",
                                  likelihood=likelihood())),
                TARGETS[:1], ENDS[:1], None, future_cov)
    imported = import_both(save(model, tmp_path_factory, f"rnn-{name}"))
    assert imported.spec.output.kind == kind
    if kind == "quantile":  # Darts' default quantiles, the median at index 8
        assert len(imported.spec.output.quantiles) == 17
        assert imported.spec.output.quantiles[imported.spec.output.point_index] == 0.5
    # Darts gives likelihood parameters for n=1 only (output_chunk_length 1): compare one
    # step for every series (the model trained on one predicts for all three).
    predictions, values = darts_predict(model, ENDS, TARGETS, None, future_cov, 1,
                                        predict_likelihood_parameters=True)
    expected = values[:, :, list(predictions[0].components).index(column)]
    ours = our_forecast(imported, ENDS, TARGETS, None, future_cov, 1)
    assert_matches(ours[:, :, 0], expected)
    assert_levels_as_darts(imported, predictions, values, ENDS, TARGETS, None, future_cov, 1)


def test_rnn_model_float64_weights(tmp_path_factory):
    _, future_cov = covariate_slices([], [0])
    model = fit(RNNModel(input_chunk_length=12, training_length=16, **kwargs(model="GRU")),
                TARGETS[:1], ENDS[:1], None, future_cov, dtype=np.float64)
    imported = import_both(save(model, tmp_path_factory, "rnn-f64"))
    assert "float64" in imported.source["dtype"]
    _, expected = darts_predict(model, ENDS[:1], TARGETS[:1], None, future_cov, 6,
                                dtype=np.float64)
    assert expected.dtype == np.float64
    ours = our_forecast(imported, ENDS[:1], TARGETS[:1], None, future_cov, 6)
    assert_matches(ours, expected)


# --- BlockRNNModel: direct, the fc block on each of the last output_chunk_length steps ---

BLOCK_CASES = {
    "lstm-past-relu": dict(model="LSTM", n_rnn_layers=1, hidden_fc_sizes=[6],
                           past=[0, 1], future=[], ocl=4, n=4),
    "gru-future-tanh": dict(model="GRU", n_rnn_layers=2, hidden_fc_sizes=[5, 4],
                            activation="Tanh", past=[], future=[1], ocl=4, n=4),
    "lstm-past-and-future-no-fc": dict(model="LSTM", n_rnn_layers=2, hidden_fc_sizes=[],
                                       past=[0], future=[1], ocl=5, n=3),
    "gru-no-covariates-n-below-ocl": dict(model="GRU", n_rnn_layers=1, hidden_fc_sizes=[4],
                                          activation="Sigmoid", past=[], future=[], ocl=5,
                                          n=2),
}


@pytest.mark.parametrize("case", list(BLOCK_CASES))
def test_block_rnn_model_forecasts_as_darts(case, tmp_path_factory):
    config = dict(BLOCK_CASES[case])
    past, future, ocl, n = (config.pop(key) for key in ("past", "future", "ocl", "n"))
    past_cov, future_cov = covariate_slices(past, future)
    model = fit(BlockRNNModel(input_chunk_length=12, output_chunk_length=ocl, **kwargs(**config)),
                TARGETS[:1], ENDS[:1], past_cov, future_cov)
    imported = import_both(save(model, tmp_path_factory, case))
    spec = imported.spec
    assert spec.state_mode == "window:12" and spec.window == 12
    assert spec.forecast_mode == "direct" and spec.horizon == ocl
    assert imported.source["class"] == "BlockRNNModel"
    assert spec.features == ("y", *(f"past_{i + 1}" for i in range(len(past))),
                             *(f"future_{i + 1}" for i in range(len(future))))
    assert len(spec.head) == len(config["hidden_fc_sizes"]) + 1
    activation = config.get("activation", "ReLU").lower()
    assert [dense.activation.name for dense in spec.head] == \
        [activation] * len(config["hidden_fc_sizes"]) + ["linear"]
    # Darts needs future covariates up to output_chunk_length even when n is smaller
    _, expected = darts_predict(model, ENDS[:1], TARGETS[:1], past_cov, future_cov, n)
    ours = our_forecast(imported, ENDS[:1], TARGETS[:1], past_cov, future_cov, n,
                        future_rows=ocl)
    assert ours.shape == (1, n, 1)
    assert_matches(ours, expected)


@pytest.fixture(scope="module")
def block_several_series(tmp_path_factory):
    """A GRU block model trained on three series with past and future covariates."""
    past_cov, future_cov = covariate_slices([0], [1])
    model = fit(BlockRNNModel(input_chunk_length=10, output_chunk_length=3,
                              **kwargs(model="GRU", hidden_fc_sizes=[5])),
                TARGETS, ENDS, past_cov, future_cov)
    return model, import_both(save(model, tmp_path_factory, "block-several")), past_cov, \
        future_cov


def test_block_rnn_model_several_series_each_as_darts(block_several_series):
    model, imported, past_cov, future_cov = block_several_series
    assert_each_series_as_darts(model, imported, past_cov, future_cov, 3)


def test_block_rnn_model_fewer_steps_with_only_their_future_rows(block_several_series):
    model, imported, past_cov, future_cov = block_several_series
    _, expected = darts_predict(model, ENDS, TARGETS, past_cov, future_cov, 2)
    # step k of a block model reads only output k and step k's covariates: the first two
    # steps need no covariates beyond them
    ours = our_forecast(imported, ENDS, TARGETS, past_cov, future_cov, 2, future_rows=2)
    for stream in range(3):
        assert_matches(ours[stream], expected[stream])


@pytest.mark.parametrize("name", list(LIKELIHOODS))
def test_block_rnn_model_likelihood_point_values(name, tmp_path_factory):
    likelihood, column, kind = LIKELIHOODS[name]
    if name == "gaussian":
        past_cov, future_cov = covariate_slices([0, 1], [])
        chosen = likelihood()
    else:
        past_cov, future_cov = covariate_slices([], [1])
        chosen = likelihood(quantiles=[0.9, 0.25, 0.5, 0.1, 0.75])  # Darts sorts them
    model = fit(BlockRNNModel(input_chunk_length=12, output_chunk_length=3,
                              **kwargs(model="LSTM" if name == "gaussian" else "GRU",
                                       hidden_fc_sizes=[4], likelihood=chosen)),
                TARGETS[:1], ENDS[:1], past_cov, future_cov)
    imported = import_both(save(model, tmp_path_factory, f"block-{name}"))
    assert imported.spec.output.kind == kind
    if kind == "quantile":
        assert imported.spec.output.quantiles == (0.1, 0.25, 0.5, 0.75, 0.9)
        assert imported.spec.output.point_index == 2
    for n in (3, 2):  # n <= output_chunk_length: Darts gives the parameters of each step
        predictions, values = darts_predict(model, ENDS, TARGETS, past_cov, future_cov, n,
                                            predict_likelihood_parameters=True)
        expected = values[:, :, list(predictions[0].components).index(column)]
        ours = our_forecast(imported, ENDS, TARGETS, past_cov, future_cov, n, future_rows=3)
        assert_matches(ours[:, :, 0], expected)
        assert_levels_as_darts(imported, predictions, values, ENDS, TARGETS, past_cov,
                               future_cov, n, future_rows=3)


def test_block_rnn_model_float64_weights(tmp_path_factory):
    past_cov, future_cov = covariate_slices([0], [1])
    model = fit(BlockRNNModel(input_chunk_length=12, output_chunk_length=4,
                              **kwargs(model="LSTM", n_rnn_layers=2, hidden_fc_sizes=[5])),
                TARGETS[:1], ENDS[:1], past_cov, future_cov, dtype=np.float64)
    imported = import_both(save(model, tmp_path_factory, "block-f64"))
    assert "float64" in imported.source["dtype"]
    _, expected = darts_predict(model, ENDS[:1], TARGETS[:1], past_cov, future_cov, 4,
                                dtype=np.float64)
    ours = our_forecast(imported, ENDS[:1], TARGETS[:1], past_cov, future_cov, 4)
    assert_matches(ours, expected)


# --- what is refused ----------------------------------------------------------------------


def test_vanilla_rnn_is_refused(tmp_path_factory):
    model = fit(RNNModel(input_chunk_length=8, training_length=10, **kwargs(model="RNN")),
                TARGETS[:1], ENDS[:1], None, None)
    path = save(model, tmp_path_factory, "vanilla")
    for candidate in (path, Path(f"{path}.ckpt")):
        with pytest.raises(ImportFailed, match="RNN module is not supported"):
            import_darts(candidate)


def test_reversible_instance_norm_is_refused(tmp_path_factory):
    model = fit(BlockRNNModel(input_chunk_length=8, output_chunk_length=2,
                              **kwargs(model="LSTM", use_reversible_instance_norm=True)),
                TARGETS[:1], ENDS[:1], None, None)
    path = save(model, tmp_path_factory, "rin")
    with pytest.raises(ImportFailed, match="use_reversible_instance_norm"):
        import_darts(path)


def test_model_pt_without_its_ckpt_is_refused(rnn_several_series, tmp_path):
    _, imported, _, path = rnn_several_series
    assert imported.source["file"] == "model.pt.ckpt"
    lonely = tmp_path / "model.pt"
    shutil.copy(path, lonely)  # the pickled model without the checkpoint Darts writes beside
    with pytest.raises(ImportFailed, match=r"holds no weights.*model\.pt\.ckpt"):
        import_darts(lonely)
