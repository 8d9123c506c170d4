"""Shared benchmark plumbing: the machine, the peers (PyTorch eager, ONNX Runtime), timing.

Every figure a benchmark prints is measured in the same run, interleaved round by round,
so that the ratios hold even on a noisy shared machine.
"""

from __future__ import annotations

import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def machine() -> str:
    """One line: CPU model, cores, and the versions that matter."""
    import numba
    import onnxruntime
    import torch

    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"numpy {np.__version__}, numba {numba.__version__} "
            f"({numba.config.THREADING_LAYER} layer, {numba.get_num_threads()} threads), "
            f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
            f"{panel_geometry()}")


def panel_geometry() -> str:
    """The tile the many-stream path's products use on this CPU (:mod:`kernels.panels`)."""
    from statecast.kernels.panels import LANES, PANEL, TILE_ROWS

    return f"panel products {TILE_ROWS} x {PANEL} ({LANES}-lane vectors)"


class TorchStack:
    """A PyTorch recurrent stack plus Linear head that returns its state, for export."""

    def __init__(self, cell: str, inputs: int, hidden: int, layers: int, outputs: int,
                 seed: int = 0) -> None:
        import torch

        torch.manual_seed(seed)
        rnn_class = torch.nn.LSTM if cell == "lstm" else torch.nn.GRU
        self.cell = cell

        class Net(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.rnn = rnn_class(inputs, hidden, num_layers=layers, batch_first=True)
                self.fc = torch.nn.Linear(hidden, outputs)

            def forward(self, x, h0, c0=None):
                if c0 is None:
                    y, h_n = self.rnn(x, h0)
                    return y, self.fc(y[:, -1]), h_n
                y, (h_n, c_n) = self.rnn(x, (h0, c0))
                return y, self.fc(y[:, -1]), h_n, c_n

        self.net = Net().eval()

    def state_dict(self) -> dict[str, np.ndarray]:
        return {k: v.detach().numpy() for k, v in self.net.state_dict().items()}

    def export_onnx(self, batch: int, steps: int) -> Path:
        """TorchScript export with h0 (and c0) as inputs; returns the .onnx path."""
        import torch

        rnn = self.net.rnn
        x = torch.zeros(batch, steps, rnn.input_size)
        h0 = torch.zeros(rnn.num_layers, batch, rnn.hidden_size)
        args = (x, h0) if self.cell == "gru" else (x, h0, torch.zeros_like(h0))
        names = ["x", "h0"] + ([] if self.cell == "gru" else ["c0"])
        outputs = ["y", "head", "h_n"] + ([] if self.cell == "gru" else ["c_n"])
        path = Path(tempfile.mkdtemp(prefix="statecast-bench-")) / "model.onnx"
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(self.net, args, str(path), dynamo=False, input_names=names,
                              output_names=outputs, opset_version=17,
                              dynamic_axes={"x": {0: "batch", 1: "time"},
                                            **{n: {1: "batch"} for n in names[1:]}})
        return path


def ort_session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


#: Seconds to wait between contenders for the last one's threads to stop spinning.
SETTLE = 0.1


def interleaved_medians(contenders: dict[str, Callable[[], object]], rounds: int,
                        budget: float = 0.02, before: dict[str, Callable[[], None]] | None
                        = None) -> dict[str, float]:
    """Median seconds per call of each contender, measured round-robin.

    Each round runs every contender for about ``budget`` seconds (at least 3 calls);
    ``before[name]()`` runs ahead of a contender's turn (e.g. to set a thread count).
    Before each turn: a pause of ``SETTLE`` seconds, then two untimed calls. Thread pools
    (OpenMP's in PyTorch and Numba, ONNX Runtime's) spin-wait for a while after a call;
    without the pause the next contender shares the two cores with the last one's spinning
    threads (measured: up to 10x slower calls).
    """
    before = before or {}
    calls = {}
    for name, call in contenders.items():
        before.get(name, lambda: None)()
        call()  # warm
        started = time.perf_counter()
        count = 0
        while time.perf_counter() - started < budget / 4 or count < 3:
            call()
            count += 1
        per_call = (time.perf_counter() - started) / count
        calls[name] = max(3, int(budget / per_call))
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, call in contenders.items():
            before.get(name, lambda: None)()
            time.sleep(SETTLE)
            call()
            call()
            n = calls[name]
            started = time.perf_counter()
            for _ in range(n):
                call()
            samples[name].append((time.perf_counter() - started) / n)
    return {name: statistics.median(values) for name, values in samples.items()}


def fmt_time(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:8.1f} us"
    return f"{seconds * 1e3:8.2f} ms"
