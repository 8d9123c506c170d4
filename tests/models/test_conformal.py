"""Conformal intervals: Nixtla's conformal_distribution on the same numbers, levels checked,
calibrations stored beside a version and verified."""

import json

import numpy as np
import pandas as pd
import pytest

from statecast.models.conformal import (
    CALIBRATION,
    Calibration,
    check_levels,
    conformal_intervals,
    level_name,
    read_calibration,
    write_calibration,
)
from statecast.models.errors import ArtifactError, IntegrityError, InvalidLevel, LevelUnavailable

# Three windows of absolute errors of a 4-step forecast of one series.
SCORES = np.array([[0.5, 1.0, 2.0, 0.25], [1.5, 0.0, 3.0, 1.0], [0.75, 2.5, 1.0, 4.0]])
FORECAST = np.array([10.0, 12.5, -3.0, 0.0])


def test_intervals_equal_neuralforecasts_conformal_distribution():
    from neuralforecast.utils import add_conformal_distribution_intervals

    levels = [50, 80, 95]
    scores_df = pd.DataFrame({"m": SCORES.reshape(-1)})  # series x windows x horizon
    theirs, columns = add_conformal_distribution_intervals(
        FORECAST.reshape(-1, 1), scores_df, "m", cs_n_windows=3, n_series=1, horizon=4,
        level=levels)
    ours = conformal_intervals(FORECAST.reshape(4, 1).astype(np.float32),
                               SCORES.reshape(3, 4, 1).astype(np.float32), check_levels(levels))
    for index, column in enumerate(columns):
        name = column.removeprefix("m-")
        np.testing.assert_allclose(ours[name][:, 0], theirs[:, 1 + index], rtol=1e-6)
    assert set(ours) == {f"{side}-{level}" for side in ("lo", "hi") for level in levels}
    assert (ours["lo-95"] <= ours["lo-80"]).all() and (ours["hi-80"] <= ours["hi-95"]).all()


@pytest.mark.parametrize("levels", [[0], [100], [-5], [float("nan")], [80, 80],
                                    list(range(10, 100, 10))])
def test_levels_outside_0_100_repeated_or_too_many_are_refused(levels):
    with pytest.raises(InvalidLevel):
        check_levels(levels)


def test_a_calibration_shorter_than_the_forecast_gives_no_level():
    with pytest.raises(LevelUnavailable):
        conformal_intervals(np.zeros((5, 1), np.float32), np.ones((3, 4, 1), np.float32),
                            (80.0,))


def test_calibrations_are_replaced_atomically_and_verified(tmp_path):
    assert read_calibration(tmp_path) is None
    first = Calibration(np.ones((2, 3, 1), np.float32), {"windows": 2})
    write_calibration(tmp_path, first)
    second = Calibration(np.full((4, 3, 1), 2.0, np.float32), {"windows": 4})
    write_calibration(tmp_path, second)
    read = read_calibration(tmp_path)
    assert read is not None and read.info["windows"] == 4
    np.testing.assert_array_equal(read.scores, second.scores)
    # The file the replaced manifest named stays for readers in flight; older ones go.
    assert len(list(tmp_path.glob("calibration-*.safetensors"))) == 2
    write_calibration(tmp_path, Calibration(np.full((1, 3, 1), 3.0, np.float32)))
    assert len(list(tmp_path.glob("calibration-*.safetensors"))) == 2
    write_calibration(tmp_path, second)
    manifest = json.loads((tmp_path / CALIBRATION).read_text())
    scores = tmp_path / manifest["file"]
    scores.write_bytes(scores.read_bytes()[:-1] + b"\x01")
    with pytest.raises(IntegrityError):
        read_calibration(tmp_path)
    (tmp_path / CALIBRATION).write_text("{not json")
    with pytest.raises(ArtifactError):
        read_calibration(tmp_path)


def test_readers_never_fail_while_a_calibration_is_replaced(tmp_path):
    import threading

    write_calibration(tmp_path, Calibration(np.ones((2, 3, 1), np.float32)))
    errors, done = [], threading.Event()

    def read_forever():
        while not done.is_set():
            try:
                found = read_calibration(tmp_path)
                assert found is not None and found.scores.shape[1:] == (3, 1)
            except Exception as error:
                errors.append(error)

    reader = threading.Thread(target=read_forever)
    reader.start()
    try:
        for n in range(1, 40):
            write_calibration(tmp_path, Calibration(np.full((n, 3, 1), n, np.float32)))
    finally:
        done.set()
        reader.join()
    assert not errors


def test_level_names_keep_every_digit():
    assert [level_name(v) for v in (80, 80.0, 99.5, 99.99999)] == ["80", "80", "99.5",
                                                                 "99.99999"]
    with pytest.raises(InvalidLevel):
        check_levels([80, 80.0])
    assert len(check_levels([12.3456781, 12.3456782])) == 2


@pytest.mark.parametrize("scores", [np.ones((0, 3, 1)), -np.ones((2, 3, 1)),
                                    np.full((2, 3, 1), np.nan), np.ones((2, 3))])
def test_scores_that_are_not_absolute_errors_are_refused(tmp_path, scores):
    from statecast.models.errors import ModelError

    with pytest.raises(ModelError):
        write_calibration(tmp_path, Calibration(scores.astype(np.float32)))
    assert read_calibration(tmp_path) is None
