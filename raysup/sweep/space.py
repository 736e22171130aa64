"""A user's search space from the command line (``--grid``, ``--sample``) and the Tune objects it
becomes: the specs are parsed into plain JSON-able values (recorded in ``sweep.json``), turned
into Tune's search-space objects, searchers and schedulers only when a sweep starts.

``--grid key=v1,v2,...``: every value is a trial. ``--sample key=DIST``, DIST one of
``loguniform:LOW:HIGH``, ``uniform:LOW:HIGH``, ``randint:LOW:HIGH`` (HIGH excluded, as Tune's)
or ``choice:a,b,c``: each trial draws a value."""
from __future__ import annotations

import importlib.util
import itertools
from typing import Any

from raysup.config import ConfigError

DISTRIBUTIONS = ("loguniform", "uniform", "randint", "choice")
SEARCHES = ("grid", "random", "optuna", "hyperopt")
SCHEDULERS = ("fifo", "asha")
# Tune's PopulationBasedTraining restarts a trial from another trial's checkpoint with perturbed
# settings; a raysup trial resumes only its own run folder with its own settings (config.json
# refuses a changed lr, and the optimizer and scheduler state loaded from a checkpoint bring its
# lr back), and its checkpoints stay in that folder, never reported to Tune (which has none to copy)
PBT_REFUSAL = ("--scheduler pbt: not supported: PBT restarts a trial from another trial's checkpoint with perturbed settings, and a raysup "
               "trial resumes only its own run with its own settings; use --scheduler asha (docs/sweeps.md)")


def value(text: str) -> Any:
    """A command-line value as int, float or (else) the string itself; the config coerces it."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _split(flag: str, spec: str) -> tuple[str, str]:
    key, sep, rest = spec.partition("=")
    if not sep or not key.strip() or not rest.strip():
        raise ConfigError(f"{flag} expects key=..., got {spec!r}")
    return key.strip(), rest.strip()


def parse_grid(specs: list[str]) -> dict[str, list]:
    """``["method.k=4,8"]`` → ``{"method.k": [4, 8]}``; a malformed spec is a ConfigError naming ``--grid``."""
    grid = {}
    for spec in specs:
        key, rest = _split("--grid", spec)
        values = [value(v.strip()) for v in rest.split(",")]
        if any(v == "" for v in values) or key in grid:
            raise ConfigError(f"--grid {spec!r}: give each key once, with comma-separated values (key=v1,v2)")
        grid[key] = values
    return grid


def parse_sample(specs: list[str]) -> dict[str, list]:
    """``["optim.lr=loguniform:1e-4:1e-2"]`` → ``{"optim.lr": ["loguniform", 0.0001, 0.01]}``; a
    malformed spec is a ConfigError naming ``--sample``."""
    space = {}
    for spec in specs:
        key, rest = _split("--sample", spec)
        kind, _, args = rest.partition(":")
        if kind not in DISTRIBUTIONS or key in space:
            raise ConfigError(f"--sample {spec!r}: expected key=DIST once per key, DIST one of loguniform:LOW:HIGH, uniform:LOW:HIGH, "
                              "randint:LOW:HIGH, choice:a,b,c")
        if kind == "choice":
            values = [value(v.strip()) for v in args.split(",")]
            if any(v == "" for v in values):
                raise ConfigError(f"--sample {spec!r}: choice needs comma-separated values (choice:a,b,c)")
        else:
            values = _bounds(spec, kind, args)
        space[key] = [kind, *values]
    return space


def _bounds(spec: str, kind: str, args: str) -> list:
    parts = args.split(":")
    try:
        low, high = (int(p) if kind == "randint" else float(p) for p in parts) if len(parts) == 2 else (None, None)
    except ValueError:
        low = high = None
    if low is None or not low < high or (kind == "loguniform" and low <= 0):
        need = "0 < LOW < HIGH" if kind == "loguniform" else "LOW < HIGH" + (", integers" if kind == "randint" else "")
        raise ConfigError(f"--sample {spec!r}: {kind} needs {kind}:LOW:HIGH with {need}")
    return [low, high]


def extremes(dist: list) -> list:
    """The values of a sampled key a config check covers: the bounds (``randint``'s highest drawn
    value is HIGH - 1), or every choice."""
    kind, *args = dist
    return args if kind == "choice" else [args[0], args[1] - 1] if kind == "randint" else args


def corners(grid: dict[str, list], space: dict[str, list]) -> list[dict[str, Any]]:
    """Every grid point with every combination of the sampled keys' :func:`extremes`: the configs
    a sweep checks before it starts."""
    values = {**grid, **{k: extremes(d) for k, d in space.items()}}
    return [dict(zip(values, combo)) for combo in itertools.product(*values.values())]


def param_space(grid: dict[str, list], space: dict[str, list], search: str) -> dict[str, Any]:
    """Tune's ``param_space``: grid keys as ``grid_search`` (as ``choice`` for Optuna and HyperOpt,
    whose searchers take no grids), sampled keys as their distributions."""
    from ray import tune

    make = {"loguniform": tune.loguniform, "uniform": tune.uniform, "randint": tune.randint}
    out = {k: tune.choice(v) if search in ("optuna", "hyperopt") else tune.grid_search(v) for k, v in grid.items()}
    for k, (kind, *args) in space.items():
        out[k] = tune.choice(args) if kind == "choice" else make[kind](*args)
    return out


def check_search(search: str, scheduler: str, metric: str, space: dict[str, list], samples: int) -> None:
    """ConfigError, naming the flag, for a search the other flags contradict or whose optional
    package is missing."""
    if search not in SEARCHES:
        raise ConfigError(f"--search: one of {', '.join(SEARCHES)}, got {search!r}")
    if scheduler == "pbt":
        raise ConfigError(PBT_REFUSAL)
    if scheduler not in SCHEDULERS:
        raise ConfigError(f"--scheduler: one of {', '.join(SCHEDULERS)}, got {scheduler!r}")
    if samples < 1:
        raise ConfigError(f"--samples: must be >= 1, got {samples}")
    if search == "grid" and space:
        raise ConfigError("--sample: grid search only takes --grid; pass --search random, optuna or hyperopt")
    if (search in ("optuna", "hyperopt") or scheduler != "fifo") and not metric:
        raise ConfigError(f"--metric: --search {search} --scheduler {scheduler} need a metric to compare trials (e.g. loss, val_loss, probe_video)")
    if search in ("optuna", "hyperopt") and importlib.util.find_spec(search) is None:
        raise ConfigError(f"--search {search}: {search} is not installed; pip install -e '.[search]'")


def searcher(search: str, metric: str, mode: str):
    """Tune's search algorithm for ``search`` (None: Tune's grid/random variant generator)."""
    if search == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(metric=metric, mode=mode)
    if search == "hyperopt":
        from ray.tune.search.hyperopt import HyperOptSearch

        return HyperOptSearch(metric=metric, mode=mode)
    return None


def scheduler(name: str, metric: str, mode: str, epochs: int):
    """Tune's trial scheduler: ASHA stops the trials whose ``metric`` trails the others' at the
    same epoch (rungs at 1, 2, 4, ... epochs, the worst half stopped; Tune's rungs reach ``max_t``,
    so it is ``epochs`` - 1: a trial that trained to its last epoch is probed), FIFO (None) stops none."""
    if name == "asha":
        from ray.tune.schedulers import ASHAScheduler

        return ASHAScheduler(metric=metric, mode=mode, time_attr="training_iteration", grace_period=1, reduction_factor=2, max_t=max(epochs - 1, 1),
                             stop_last_trials=False)
    return None
