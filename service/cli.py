"""The ``statecast`` command line: ``import`` publishes a model version, ``run`` runs one,
``serve`` serves the registry over HTTP."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from statecast.models import Registry, StatecastError
from statecast.models.importers import (
    ForecastOptions,
    import_file,
    load_scaler,
    output_from_flags,
)
from statecast.models.importers.files import FORMATS
from statecast.models.spec import OUTPUT_KINDS, OutputSpec
from statecast.service.administration import bound_streams, comma_names
from statecast.service.bundled import seed_registry
from statecast.service.errors import StoreError, StreamNotFound, VersionInUse
from statecast.service.json_logs import log_line
from statecast.service.run_command import run_arrays
from statecast.service.settings import Settings, serve_environment
from statecast.service.stores import open_store


def _registry(root: str) -> Registry:
    """The registry at ``root``, seeded with the bundled model on first use."""
    registry = Registry(root)
    seed_registry(registry)
    return registry


def _import(args: argparse.Namespace) -> int:
    activations = comma_names(args.head_activations)
    options = ForecastOptions(
        mode=args.mode, horizon=args.horizon, targets=comma_names(args.targets),
        features=comma_names(args.features), state_mode=args.state_mode,
        scaler=load_scaler(args.scaler) if args.scaler else None,
        output=output_from_flags(args.head_output, args.quantiles))
    imported = import_file(
        Path(args.path), file_format=args.format, options=options, cell=args.cell,
        rnn_prefix=args.rnn_prefix, head_prefix=args.head_prefix,
        head_activations=list(activations) if activations else None,
        head_every_step=args.head_every_step)
    registry = _registry(args.registry)
    aliases = ("latest", *(comma_names(args.alias) or ()))
    version = registry.publish(args.name, imported.spec, imported.tensors, imported.source,
                               version=args.version, aliases=aliases)
    spec = imported.spec
    layers = ", ".join(f"{layer.cell}({layer.hidden_size}"
                       + (f", proj {layer.proj_size}" if layer.proj_size else "") + ")"
                       for layer in spec.layers)
    print(f"published {args.name}@{version} to {registry.root}: {spec.input_size} features "
          f"-> {layers}" + (f" -> head {[d.out_features for d in spec.head]}" if spec.head
                            else "") + f"; {spec.forecast_mode}, horizon {spec.horizon}, "
          f"{spec.state_mode}" + _head_output(spec.output))
    if imported.source.get("outputs"):
        print(f"forecast: {imported.source['outputs']}")
    return 0


def _head_output(output: OutputSpec) -> str:
    """``; gaussian head`` or ``; quantile head [0.1, 0.5, 0.9]``, empty for a point head."""
    if output.kind == "point":
        return ""
    return f"; {output.kind} head" + (f" {list(output.quantiles)}" if output.quantiles else "")


def _serve(args: argparse.Namespace) -> int:
    """Replace this process with gunicorn serving the settings the flags give (each flag
    over its ``STATECAST_*`` variable). The settings reach gunicorn and its workers as the
    environment of the exec'd process, a dict of its own (:func:`serve_environment`):
    this process's ``os.environ`` is never changed."""
    flags = ("host", "port", "registry", "store", "workers", "threads", "worker_class")
    try:
        settings = Settings(**{key: getattr(args, key) for key in flags
                               if getattr(args, key) is not None})
    except ValidationError as error:
        print(f"statecast: error: invalid settings: {error}", file=sys.stderr)
        return 2
    if settings.store == "memory" and settings.resolved_workers() != 1:
        raise StoreError("the memory store lives in one process: serve it with --workers 1 "
                         "(and more --threads), or use sqlite:PATH")
    open_store(settings.store).close()  # fail here, clearly, on a bad address
    _registry(str(settings.registry))  # seeded once, before the workers start
    print(log_line(f"serving {settings.registry} on http://{settings.host}:{settings.port} "
                   f"with {settings.resolved_workers()} {settings.resolved_worker_class()} "
                   f"worker(s) x {settings.resolved_threads()} thread(s), "
                   f"store {settings.store}"), flush=True)
    command = [sys.executable, "-m", "gunicorn",
               "--config", "python:statecast.service.gunicorn_conf",
               "statecast.service.app:create_app()"]
    os.execve(command[0], command, serve_environment(settings, os.environ))
    return 0  # not reached


def _models(args: argparse.Namespace) -> int:
    registry = _registry(args.registry)
    if args.action == "list":
        for name in registry.models():
            aliases = ", ".join(f"{a}={v}" for a, v in sorted(registry.aliases(name).items()))
            print(f"{name}\tversions {', '.join(registry.versions(name))}\t{aliases}")
    elif args.action == "show":
        manifest = registry.manifest(args.model)
        print(json.dumps(manifest, indent=2))
    elif args.action == "alias":
        registry.set_alias(args.model, args.alias, args.version)
        print(f"{args.model}: {args.alias} -> {args.version}")
    else:  # delete
        store = open_store(args.store)
        bound = bound_streams(store, args.model, args.version)
        if bound and not args.force:
            raise VersionInUse(f"{len(bound)} stream(s) are bound to {args.model}@"
                               f"{args.version} (e.g. {bound[:5]}); --force deletes anyway")
        dropped = registry.delete_version(args.model, args.version)
        print(f"deleted {args.model}@{args.version}" +
              (f"; aliases dropped: {', '.join(dropped)}" if dropped else ""))
    return 0


def _streams(args: argparse.Namespace) -> int:
    store = open_store(args.store)
    if args.action == "list":
        for record in sorted(store.scan(args.model), key=lambda r: (r.model, r.stream)):
            if args.version and record.version != args.version:
                continue
            print(f"{record.model}\t{record.stream}\tversion {record.version}\tstep "
                  f"{record.step}" + ("\texpired" if record.expired else ""))
    elif args.action == "show":
        found = store.get(args.model, args.stream)
        if found is None:
            raise StreamNotFound(f"no stream {args.stream!r} of model {args.model!r}")
        print(json.dumps({"model": found.model, "stream": found.stream,
                          "version": found.version, "origin": found.origin,
                          "step": found.step, "revision": found.revision,
                          "expired": found.expired, "updated_at": found.updated_at,
                          "retained_observations": int(found.tail.shape[0])}, indent=2))
    else:  # delete
        if not store.delete(args.model, args.stream):
            raise StreamNotFound(f"no stream {args.stream!r} of model {args.model!r}")
        print(f"deleted stream {args.stream} of {args.model}")
    return 0


def _batch(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from statecast.service.batch import Backtest, Columns, JobSpec, run_job
    from statecast.service.batch.chunks import read_frame

    registry = _registry(args.registry)  # seeds the bundled model, as everywhere
    plan = None
    if args.backtest:
        plan = Backtest(args.n_windows, args.step_size or args.horizon or 1)
    columns = Columns(args.id_col, args.time_col, args.target_col)
    spec = JobSpec(args.model, str(registry.root), args.horizon, args.freq, columns, args.fill,
                   plan, args.future, tuple(args.level or ()),
                   None if args.calibrate_windows is None
                   else Backtest(args.calibrate_windows, args.calibrate_step))
    with tqdm(unit="series", disable=args.quiet, file=sys.stderr) as bar:

        def counted(series: int) -> None:  # the job counts the series once, for both
            bar.total = series
            bar.refresh()

        summary = run_job(args.input, args.output, spec, chunk_size=args.chunk_size,
                          to_store=args.to_store, dask=args.dask, progress=bar.update,
                          on_total=counted)
    if args.plot:
        from statecast.service.batch.plot import plot

        plot(read_frame(args.input), read_frame(args.output), summary["model"], args.plot,
             columns)
    print(json.dumps(summary))
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from statecast.service.batch import Columns
    from statecast.service.batch.calibration import calibrate
    from statecast.service.batch.chunks import read_frame

    registry = _registry(args.registry)
    model = registry.load(args.model)
    calibration = calibrate(read_frame(args.input), model, args.n_windows, args.step_size,
                            args.horizon, Columns(args.id_col, args.time_col, args.target_col),
                            args.fill)
    # The version the errors were measured on, even if an alias moved meanwhile.
    version = registry.set_calibration(f"{model.name}@{model.version}", calibration)
    scores = calibration.scores
    print(json.dumps({"model": model.name, "version": version, **calibration.info,
                      "scores": scores.shape[0],
                      "mean_abs_error": [float(v) for v in scores.mean(axis=(0, 2))]}))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from statecast.service.batch import Columns, evaluate
    from statecast.service.batch.chunks import read_frame

    columns = Columns(args.id_col, args.time_col, args.target_col)
    forecasts = read_frame(args.forecasts)
    train = read_frame(args.train) if args.train else None
    metrics = tuple(comma_names(args.metrics) or ())
    table = evaluate(forecasts, metrics, train=train, seasonality=args.seasonality,
                     columns=columns)
    if args.output:
        table.to_csv(args.output, index=False)
    models = [c for c in table.columns if c not in (columns.id, "cutoff", "metric")]
    summary = table.groupby("metric", sort=False)[models].mean()
    print(summary.to_string())
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``statecast`` argument parser (one sub-command per job)."""
    parser = argparse.ArgumentParser(prog="statecast", description=__doc__)
    default_registry = os.environ.get("STATECAST_REGISTRY", "./registry")
    commands = parser.add_subparsers(dest="command", required=True)

    imp = commands.add_parser("import", help="publish a framework file as a model version")
    imp.add_argument("path", help="a .pt/.pth state_dict, a .safetensors file, a Keras "
                                  ".keras/.h5 file or an .onnx model")
    imp.add_argument("--name", required=True, help="model name in the registry")
    imp.add_argument("--registry", default=default_registry,
                     help="registry directory (default $STATECAST_REGISTRY or ./registry)")
    imp.add_argument("--format", choices=FORMATS,
                     help="file format (default: from the file's suffix)")
    imp.add_argument("--version", help="version name (default: the next integer)")
    imp.add_argument("--alias", help="comma-separated aliases to point at it besides latest")
    imp.add_argument("--cell", choices=("lstm", "gru"), help="check the cell type")
    imp.add_argument("--rnn-prefix", help="module prefix of the recurrent layers, e.g. rnn.")
    imp.add_argument("--head-prefix", help="module prefix of the Linear head, e.g. fc.")
    imp.add_argument("--head-activations", help="one activation per head Linear: relu,linear")
    imp.add_argument("--head-every-step", action="store_true",
                     help="the head is applied at every step (seq2seq), not the last one")
    imp.add_argument("--mode", choices=("direct", "recursive"), default="direct",
                     help="direct: the head emits horizon x targets; recursive: one step")
    imp.add_argument("--horizon", type=int, help="forecast steps (direct: outputs/targets)")
    imp.add_argument("--targets", help="comma-separated target names (default: 1st feature)")
    imp.add_argument("--features", help="comma-separated feature names")
    imp.add_argument("--scaler", help="scaler JSON: mean/std or min/max per feature")
    imp.add_argument("--state-mode", default="carry", help="carry (default) or window:W")
    imp.add_argument("--head-output", choices=OUTPUT_KINDS,
                     help="what the head emits per step and target: point (default), "
                          "gaussian (mu, then sigma before softplus) or quantile (one value "
                          "per --quantiles); a distribution head gives the intervals "
                          "of \"level\" itself and needs --state-mode window:W")
    imp.add_argument("--quantiles", help="comma-separated, increasing quantiles of a quantile "
                                         "head, in its order, holding 0.5: 0.1,0.5,0.9")
    imp.set_defaults(handler=_import)

    run = commands.add_parser("run", help="run a model version on arrays from an .npz file")
    run.add_argument("--registry", default=default_registry, help="registry directory")
    run.add_argument("--model", required=True, help="NAME, NAME@VERSION or NAME@ALIAS")
    run.add_argument("--inputs", required=True,
                     help=".npz with x [batch, time, features] and optional h0/c0 "
                          "([layers, batch, size]) or h0_<l>/c0_<l>")
    run.add_argument("--output", required=True, help=".npz to write y, h_n/c_n, head")
    run.add_argument("--forecast", type=int, metavar="H",
                     help="x holds raw observations: write each series' state after them "
                          "and its H-step forecast in original units (as the service "
                          "computes them) instead")
    run.set_defaults(handler=lambda args: run_arrays(args, _registry(args.registry)))

    serve = commands.add_parser("serve", help="serve the registry's models over HTTP (gunicorn)")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8000)")
    serve.add_argument("--registry", help="registry directory (default ./registry)")
    serve.add_argument("--store", help="memory, sqlite:PATH (default sqlite:statecast-state.db)"
                                       ", redis://host:port/db or redis+cluster://host:port"
                                       " (redis: ?wait=N to wait for N replicas)")
    serve.add_argument("--workers", type=int, help="worker processes (default: one per core)")
    serve.add_argument("--threads", type=int,
                       help="threads per worker (default 1 for sync workers, 4 for gthread)")
    serve.add_argument("--worker-class", choices=("auto", "sync", "gthread"),
                       help="gunicorn worker class (default auto: sync, gthread for memory)")
    serve.set_defaults(handler=_serve)

    batch = commands.add_parser(
        "batch", help="forecast (or backtest) every series of a Parquet/CSV file")
    batch.add_argument("--model", required=True, help="NAME, NAME@VERSION or NAME@ALIAS")
    batch.add_argument("--input", required=True,
                       help="long-format .parquet or .csv: unique_id, ds, y (+ covariates)")
    batch.add_argument("--output", required=True, help=".parquet or .csv to write")
    batch.add_argument("--registry", default=default_registry,
                       help="registry directory (default $STATECAST_REGISTRY or ./registry)")
    batch.add_argument("--h", "--horizon", dest="horizon", type=int,
                       help="forecast steps (default: the model's horizon)")
    batch.add_argument("--freq", help="step between times: an integer, or a pandas offset "
                                      "alias such as D, h, MS (default: inferred)")
    batch.add_argument("--id-col", default="unique_id")
    batch.add_argument("--time-col", default="ds")
    batch.add_argument("--target-col", default="y")
    batch.add_argument("--future", help="future covariates of every forecast step (Nixtla's "
                       "X_df): .parquet or .csv with the id and time columns and the "
                       "covariates")
    batch.add_argument("--fill", choices=("ffill", "zero", "interpolate"),
                       help="fill missing values per series (default: refuse them)")
    batch.add_argument("--chunk-size", type=int, default=10_000,
                       help="series per chunk: bounds memory (default 10000)")
    batch.add_argument("--level", type=float, nargs="+",
                       help="add conformal intervals (e.g. --level 80 95: columns "
                            "<model>-lo-80, <model>-hi-80, ...) from the version's calibration")
    batch.add_argument("--calibrate-windows", type=int,
                       help="with --level: conformal intervals from each series' own backtest "
                            "of this many windows instead of the stored calibration")
    batch.add_argument("--calibrate-step", type=int, default=1,
                       help="steps between those windows' cutoffs (default 1)")
    batch.add_argument("--backtest", action="store_true",
                       help="forecast from n-windows cutoffs instead (adds cutoff and y)")
    batch.add_argument("--n-windows", type=int, default=1)
    batch.add_argument("--step-size", type=int, help="steps between cutoffs (default h)")
    batch.add_argument("--to-store", help="sqlite:PATH, redis://... or redis+cluster://...: "
                                          "hand every series' final state to the service's "
                                          "store")
    batch.add_argument("--dask", help="tcp://scheduler:8786, or local for a LocalCluster")
    batch.add_argument("--plot", help="PNG of history and forecast for a few series")
    batch.add_argument("--quiet", action="store_true", help="no progress bar")
    batch.set_defaults(handler=_batch)

    calibration = commands.add_parser(
        "calibrate", help="store conformal intervals' calibration beside a model version "
        "(absolute errors of backtest forecasts on a history file)")
    calibration.add_argument("--model", required=True, help="NAME, NAME@VERSION or NAME@ALIAS")
    calibration.add_argument("--input", required=True,
                             help="long-format .parquet or .csv history: unique_id, ds, y")
    calibration.add_argument("--n-windows", type=int, required=True,
                             help="backtest windows per series (at least 2)")
    calibration.add_argument("--step-size", type=int, default=1,
                             help="steps between the windows' cutoffs (default 1)")
    calibration.add_argument("--h", "--horizon", dest="horizon", type=int,
                             help="steps per window (default: the model's horizon)")
    calibration.add_argument("--registry", default=default_registry,
                             help="registry directory (default $STATECAST_REGISTRY or "
                                  "./registry)")
    calibration.add_argument("--id-col", default="unique_id")
    calibration.add_argument("--time-col", default="ds")
    calibration.add_argument("--target-col", default="y")
    calibration.add_argument("--fill", choices=("ffill", "zero", "interpolate"))
    calibration.set_defaults(handler=_calibrate)

    evaluate = commands.add_parser(
        "evaluate", help="MAE, RMSE, sMAPE (0-200), MASE of forecasts against actuals")
    evaluate.add_argument("forecasts", help="a backtest output (.parquet/.csv with y)")
    evaluate.add_argument("--metrics", default="mae,rmse,smape",
                          help="comma-separated: mae, rmse, smape, mase")
    evaluate.add_argument("--train", help="the training series (needed by mase)")
    evaluate.add_argument("--seasonality", type=int, help="MASE's seasonal period (explicit)")
    evaluate.add_argument("--output", help="CSV of every series' scores")
    evaluate.add_argument("--id-col", default="unique_id")
    evaluate.add_argument("--time-col", default="ds")
    evaluate.add_argument("--target-col", default="y")
    evaluate.set_defaults(handler=_evaluate)

    default_store = os.environ.get("STATECAST_STORE", "sqlite:statecast-state.db")
    models = commands.add_parser("models", help="list, show, alias or delete model versions")
    models_actions = models.add_subparsers(dest="action", required=True)
    for action in ("list", "show", "alias", "delete"):
        sub = models_actions.add_parser(action)
        sub.add_argument("--registry", default=default_registry, help="registry directory")
        if action != "list":
            sub.add_argument("model", help="NAME (show: NAME[@VERSION|@ALIAS])")
        if action == "alias":
            sub.add_argument("alias")
            sub.add_argument("version")
        if action == "delete":
            sub.add_argument("version")
            sub.add_argument("--store", default=default_store,
                             help="the store whose streams may be bound to the version")
            sub.add_argument("--force", action="store_true",
                             help="delete even while streams are bound to it")
    models.set_defaults(handler=_models)

    streams = commands.add_parser("streams", help="list, show or delete streams in a store")
    streams_actions = streams.add_subparsers(dest="action", required=True)
    for action in ("list", "show", "delete"):
        sub = streams_actions.add_parser(action)
        sub.add_argument("--store", default=default_store,
                         help="memory, sqlite:PATH (default $STATECAST_STORE or "
                              "sqlite:statecast-state.db)")
        if action == "list":
            sub.add_argument("--model", help="only this model's streams")
            sub.add_argument("--version", help="only streams bound to this version")
        else:
            sub.add_argument("model")
            sub.add_argument("stream")
    streams.set_defaults(handler=_streams)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``statecast`` command."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except StatecastError as error:
        print(f"statecast: error: {error}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
