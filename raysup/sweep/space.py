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
from raysup.methods import method_module

DISTRIBUTIONS = ("loguniform", "uniform", "randint", "choice")
SEARCHES = ("grid", "random", "optuna", "hyperopt")
SCHEDULERS = ("fifo", "asha", "pbt")
# What PBT may perturb mid-run (raysup.sweep.pbt): keys a restarted segment takes from its config
# without changing the model's shape, its parameters' meaning or the data: the optimiser's
# lr, weight decay, momentum and gradient clip (set into the restored optimiser), and the methods'
# loss temperatures and weights, read at every step (GDT's tau, the toy's temperature, Cross and
# Learn's div_weight, the supervised baseline's label_smoothing). Anything else (k, crop size,
# widths, batch size, epochs) would not fit the donor's checkpoint or data position.
PBT_KEYS = ("optim.lr", "optim.weight_decay", "optim.momentum", "optim.clip_grad_norm", "method.tau", "method.temperature",
            "method.div_weight", "method.label_smoothing")

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


def check_search(search: str, scheduler: str, metric: str, grid: dict[str, list], space: dict[str, list], samples: int) -> None:
    """ConfigError, naming the flag, for a search the other flags contradict or whose optional
    package is missing."""
    if search not in SEARCHES:
        raise ConfigError(f"--search: one of {', '.join(SEARCHES)}, got {search!r}")
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
    if scheduler == "pbt":
        check_pbt(search, [*grid, *space])


def check_pbt(search: str, keys: list[str]) -> None:
    """PBT perturbs every searched key, so each must be one of :data:`PBT_KEYS`; its trials come
    from grid or random search (Optuna and HyperOpt would pick configs PBT then overwrites)."""
    if search not in ("grid", "random"):
        raise ConfigError(f"--scheduler pbt: takes --search grid or random (PBT itself picks the next settings), got {search}")
    for key in keys:
        if key not in PBT_KEYS:
            raise ConfigError(f"--scheduler pbt: {key} cannot change mid-run (it changes the model's shape, the data, or is not read at every step); "
                              f"PBT perturbs only {', '.join(PBT_KEYS)}")


def check_pbt_method(method: str) -> None:
    """PBT trains a method's one stage in segments: a multi-stage method (XDC's rounds) is refused."""
    if hasattr(method_module(method), "stages"):
        raise ConfigError(f"--scheduler pbt: {method} trains in stages (rounds with their own data), which PBT cannot cut into segments; "
                          "use --scheduler asha")


def searcher(search: str, metric: str, mode: str):
    """Tune's search algorithm for ``search`` (None: Tune's grid/random variant generator)."""
    if search == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(metric=metric, mode=mode)
    if search == "hyperopt":
        from ray.tune.search.hyperopt import HyperOptSearch

        return HyperOptSearch(metric=metric, mode=mode)
    return None


def mutations(grid: dict[str, list], space: dict[str, list]) -> dict[str, Any]:
    """PBT's ``hyperparam_mutations``: a grid key's values (a perturbation moves to a neighbour),
    a sampled key's distribution (resampled, or the value ×0.8 or ×1.2)."""
    return {**{k: list(v) for k, v in grid.items()}, **param_space({}, space, "random")}


def scheduler(name: str, metric: str, mode: str, epochs: int, mutated: dict[str, Any] | None = None):
    """Tune's trial scheduler: ASHA stops the trials whose ``metric`` trails the others' at the
    same epoch (rungs at 1, 2, 4, ... epochs, the worst half stopped; Tune's rungs reach ``max_t``,
    so it is ``epochs`` - 1: a trial that trained to its last epoch is probed), FIFO (None) stops none.
    PBT (Jaderberg et al. 2017, arXiv:1711.09846 §3; Tune's defaults: the worst quarter of the
    trials takes a random one of the best quarter's checkpoint and ``mutated`` settings,
    :func:`mutations`) at every report, i.e. every segment of a PBT trial (:mod:`raysup.sweep.pbt`);
    synchronous: every trial reaches the segment's end before any is compared."""
    if name == "pbt":
        from ray.tune.schedulers import PopulationBasedTraining

        return PopulationBasedTraining(time_attr="training_iteration", metric=metric, mode=mode, perturbation_interval=1,
                                       hyperparam_mutations=mutated, synch=True)
    if name == "asha":
        from ray.tune.schedulers import ASHAScheduler

        return ASHAScheduler(metric=metric, mode=mode, time_attr="training_iteration", grace_period=1, reduction_factor=2, max_t=max(epochs - 1, 1),
                             stop_last_trials=False)
    return None
