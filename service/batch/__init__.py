"""Batch forecasting jobs over long-format series (``statecast batch``), from a laptop to
a Dask cluster, handing final states to a store for the service to continue."""

from service.batch.evaluation import evaluate
from service.batch.frames import BatchInputError, Columns
from service.batch.job import Backtest, JobSpec, forecast, run_job

__all__ = ["Backtest", "BatchInputError", "Columns", "JobSpec", "evaluate", "forecast",
           "run_job"]
