"""Batch forecasting jobs over long-format series (``statecast batch``), from a laptop to
a Dask cluster, handing final states to a store for the service to continue."""

from statecast.service.batch.chunks import Backtest, JobSpec, forecast
from statecast.service.batch.evaluation import evaluate
from statecast.service.batch.frames import BatchInputError, Columns
from statecast.service.batch.job import run_job

__all__ = ["Backtest", "BatchInputError", "Columns", "JobSpec", "evaluate", "forecast",
           "run_job"]
