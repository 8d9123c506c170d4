"""Train the bundled model: a small stateful LSTM forecasting yearly sunspot numbers.

Data: the yearly sunspot series (1700-2008) that ships inside statsmodels
(``statsmodels.datasets.sunspots``): nothing is downloaded. The model is trained the way
statecast serves it (``state_mode: carry``): the LSTM runs over the whole history with its
state carried from chunk to chunk (truncated backpropagation through time), and at every
year a direct head forecasts the next 12 years. Inputs are standardised with the training
mean and standard deviation, stored in the artifact as JSON numbers.

Run (needs the torch extra and statsmodels): ``python -m statecast.service.bundled.train_sunspots``.
It rewrites ``service/bundled/registry/sunspots/1``.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

HIDDEN = 32
HORIZON = 12
CHUNK = 24
EPOCHS = 400
HOLDOUT = 36
TARGET = Path(__file__).resolve().parent / "registry"


def load_series() -> np.ndarray:
    from statsmodels.datasets import sunspots

    return sunspots.load_pandas().data["SUNACTIVITY"].to_numpy(np.float32)


def targets_of(series: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For every year t: the next HORIZON values, and a mask of the ones that exist."""
    n = len(series)
    future = np.zeros((n, HORIZON), np.float32)
    mask = np.zeros((n, HORIZON), np.float32)
    for t in range(n):
        ahead = series[t + 1:t + 1 + HORIZON]
        future[t, :len(ahead)] = ahead
        mask[t, :len(ahead)] = 1.0
    return future, mask


def train(series: np.ndarray, mean: float, std: float):
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(1)
    scaled = (series - mean) / std
    future, mask = targets_of(scaled)
    net = torch.nn.Module()
    net.rnn = torch.nn.LSTM(1, HIDDEN, batch_first=True)
    net.head = torch.nn.Linear(HIDDEN, HORIZON)
    optimiser = torch.optim.Adam(net.parameters(), lr=0.003)
    x = torch.from_numpy(scaled).reshape(1, -1, 1)
    y = torch.from_numpy(future)[None]
    m = torch.from_numpy(mask)[None]
    for epoch in range(EPOCHS):
        state = None
        total = 0.0
        for start in range(0, x.shape[1], CHUNK):
            out, state = net.rnn(x[:, start:start + CHUNK], state)
            state = tuple(s.detach() for s in state)
            prediction = net.head(out)
            error = (prediction - y[:, start:start + CHUNK]) ** 2 * m[:, start:start + CHUNK]
            loss = error.sum() / m[:, start:start + CHUNK].sum().clamp(min=1)
            optimiser.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            optimiser.step()
            total += float(loss.detach())
        if epoch % 50 == 0:
            print(f"epoch {epoch}: loss {total:.3f}")
    return net


def evaluate(net, series: np.ndarray, mean: float, std: float, split: int) -> None:
    """MAE of the 12-year forecasts made from every held-out year (state carried over the
    whole history), against repeating the last value."""
    import torch

    with torch.no_grad():
        x = torch.from_numpy((series - mean) / std).reshape(1, -1, 1)
        out, _ = net.rnn(x)
        forecasts = net.head(out[0]).numpy() * std + mean
    errors, naive = [], []
    for origin in range(split - 1, len(series) - HORIZON):
        actual = series[origin + 1:origin + 1 + HORIZON]
        errors.append(np.abs(forecasts[origin] - actual).mean())
        naive.append(np.abs(series[origin] - actual).mean())
    print(f"held-out years {1700 + split}-{1700 + len(series) - 1}, 12-year forecasts from "
          f"{len(errors)} origins: MAE {np.mean(errors):.1f} (last value repeated: "
          f"{np.mean(naive):.1f})")


def main() -> None:
    from statecast.models import Registry
    from statecast.models.importers import ForecastOptions, import_state_dict

    series = load_series()
    split = len(series) - HOLDOUT
    mean, std = float(series[:split].mean()), float(series[:split].std())
    net = train(series[:split], mean, std)
    evaluate(net, series, mean, std, split)
    state = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    imported = import_state_dict(state, ForecastOptions(
        horizon=HORIZON, features=("sunspots",), targets=("sunspots",),
        scaler={"method": "standard", "mean": [mean], "std": [std]}))
    staging = Path(tempfile.mkdtemp())
    Registry(staging).publish("sunspots", imported.spec, imported.tensors,
                              {"framework": "pytorch", "file": "train_sunspots.py",
                               "data": "statsmodels.datasets.sunspots, 1700-"
                                       f"{1700 + split - 1}"}, version="1")
    shutil.rmtree(TARGET / "sunspots", ignore_errors=True)
    (TARGET / "sunspots").mkdir(parents=True)
    shutil.copytree(staging / "sunspots" / "1", TARGET / "sunspots" / "1")
    print(f"wrote {TARGET / 'sunspots' / '1'}")


if __name__ == "__main__":
    main()
