"""A sweep's results: the baselines (random init, the supervised baseline, cached), and the
paper-style table and plot written next to Tune's results."""
from __future__ import annotations

import dataclasses
import hashlib
import io
import itertools
import json

from ray import tune

from raysup import runner
from raysup.data.ingest import PreparedData
from raysup.data.storage import join, resolve
from raysup.methods import make_config
from raysup.sweep.trials import Sweep, objective


def supervised_dir(s: Sweep) -> str:
    """Where the supervised baseline of ``s`` is trained and cached:
    ``<storage>/<name>/baselines/supervised-<key>``, the key a hash of all it depends on (the
    prepared data's manifest, the labels file it trains on, the supervised config of the preset),
    so a sweep on other data, labels or preset never reuses it."""
    key = hashlib.sha256()
    key.update(json.dumps(PreparedData(s.data).manifest, sort_keys=True).encode())
    with open(s.pretrain_labels or s.labels, "rb") as f:
        key.update(f.read())
    key.update(json.dumps(dataclasses.asdict(make_config("supervised", s.preset)), sort_keys=True).encode())
    return join(s.storage, s.name, "baselines", f"supervised-{key.hexdigest()[:16]}")


def baselines(s: Sweep) -> dict[str, dict[str, float]]:
    """Random-init probe of the sweep's architecture (one per combination of the ``s.random_per``
    grid keys, for keys that change it, e.g. Cross and Learn's second modality) and, with
    ``s.supervised``, the supervised baseline (trained once, see :func:`supervised_dir`). With
    the paper protocol these are the papers' Scratch (finetuned from random init) and Superv
    (pretrained on ``s.pretrain_labels``, the pretraining set's labels, then finetuned;
    papers/xdc.md L99)."""
    data = PreparedData(s.data)
    out = {}
    for values in itertools.product(*(s.grid[k] for k in s.random_per)):
        cfg = make_config(s.method, s.preset, {**s.base, **dict(zip(s.random_per, values))})
        name = "random init" + "".join(f" ({v})" for v in values)
        # a paper protocol's finetuning from random init runs in runs/ (cleared by --overwrite, as the trials')
        out[name] = objective(s, cfg, runner.open_data(data, cfg), None, out=join(s.storage, s.name, "runs", name.replace(" ", "_")))
    if s.supervised:
        run_dir = supervised_dir(s)
        cfg = make_config("supervised", s.preset)
        runner.train(cfg, data, run_dir, labels=s.pretrain_labels or s.labels, resume=True)
        run = runner.open_run(run_dir)
        out["supervised"] = objective(s, run.cfg, runner.open_data(data, run.cfg), run.checkpoint, out=run_dir)
    return out


def published_columns(df, keys: list[str], published: dict[tuple, dict[str, float]]):
    """``df`` (the table: one row per trial with the grid ``keys``, then baseline rows named in
    ``keys[0]``) with a column per published number (e.g. "paper UCF101"): a trial's row takes
    ``published[(its values of keys)]``, a baseline's ``published[(its name,)]``; blank where the
    paper has none."""
    import pandas as pd

    def row_key(row) -> tuple:
        trial = all(not pd.isna(row[k]) for k in keys)
        return tuple(row[k] for k in keys) if trial else (row[keys[0]],)

    cols = list(dict.fromkeys(c for v in published.values() for c in v))
    found = [published.get(row_key(row), {}) for _, row in df.iterrows()]
    return df.assign(**{c: [f.get(c) for f in found] for c in cols})


def write_table(s: Sweep, grid: tune.ResultGrid, base: dict[str, dict[str, float]], title: str) -> str:
    """Paper-style table (one row per trial, sorted by its settings, then the baselines; trials a
    scheduler stopped have no probe and say so in a ``status`` column) as CSV, Markdown and a
    PNG plot in ``<storage>/<name>/`` (a folder or a URI); returns the Markdown."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    keys = [*s.grid, *s.space]
    rows = []
    for r in grid:
        m = r.metrics or {}
        probes = {k[6:]: v for k, v in m.items() if k.startswith("probe_")}
        # a trial a scheduler stopped has no probe: its row says after how many epochs
        status = {} if probes or s.scheduler == "fifo" else {"status": f"stopped after {m.get('training_iteration', 0)} epochs"}
        rows.append({**{k: r.config.get(k) for k in keys}, **probes, **status})
    df = pd.DataFrame(rows).sort_values(keys).reset_index(drop=True)
    if "status" in df:
        df["status"] = df["status"].fillna("finished")
    encoders = [c for c in df.columns if c not in keys and c != "status"]
    for name, acc in base.items():
        df = pd.concat([df, pd.DataFrame([{keys[0]: name, **acc}])], ignore_index=True)
    if s.published:
        df = published_columns(df, keys, s.published)
    shown = df.copy()
    blank = keys[1:] + (["status"] if "status" in df else [])
    shown[blank] = shown[blank].fillna("")  # baseline rows have no setting of the other keys, nor a status
    for c in keys:
        shown[c] = shown[c].map(lambda v: f"{v:.4g}" if isinstance(v, float) else v)  # sampled values
    for c in encoders:
        shown[c] = df[c].map(lambda v: "" if pd.isna(v) else f"{100 * v:.1f}")  # blank: no such encoder, or stopped
    for c in df.columns.difference([*keys, *encoders, "status"]):  # published numbers, already in %
        shown[c] = df[c].map(lambda v: "" if pd.isna(v) else f"{v:.1f}")
    how = f", {s.probe_folds}-fold cross-validation" if s.probe_folds else ""
    what = "paper protocol top-1 (finetuning where the paper finetunes), %" if s.protocol == "paper" else f"linear-probe top-1, %{how}"
    paper = "; paper columns: the published top-1 (its table and line in the experiment script)" if s.published else ""
    md = f"### {title}\n\n" + shown.to_markdown(index=False) + f"\n\n({what}{paper})\n"
    fig, ax = plt.subplots(figsize=(6, 4))
    sweep_rows = df.iloc[: len(rows)]
    sampled = keys[0] in s.space  # continuous x: points on a numeric axis (log for loguniform), one per trial
    lines = [k for k in keys[1:] if k in s.grid]  # one line per encoder and per setting of the other grid keys (e.g. sync on/off)
    groups = sweep_rows.groupby(lines, sort=False) if lines else [((), sweep_rows)]
    for i, c in enumerate(encoders):
        for g, (setting, sub) in enumerate(groups):
            setting = setting if isinstance(setting, tuple) else (setting,)
            label = " ".join([s.method, c] + [f"{k}={v}" for k, v in zip(lines, setting)])
            x = sub[keys[0]].astype(float) if sampled else [str(v) for v in sub[keys[0]]]
            ax.plot(x, 100 * sub[c], marker="o", ls="none" if sampled else ["-", "-.", "--"][g % 3], label=label, color=f"C{i}")
        for j, (name, acc) in enumerate(base.items()):
            if c in acc:
                ax.axhline(100 * acc[c], ls="--" if j == 0 else ":", color=f"C{i}", alpha=0.6, label=f"{name} {c}")
    if sampled and s.space[keys[0]][0] == "loguniform":
        ax.set_xscale("log")
    ax.set_xlabel(keys[0])
    ax.set_ylabel("paper protocol top-1 (%)" if s.protocol == "paper" else "linear-probe top-1 (%)")
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=120)
    plt.close(fig)
    fs, root = resolve(s.storage)
    for file, content in [("results.csv", df.to_csv(index=False).encode()), ("results.md", md.encode()), ("results.png", png.getvalue())]:
        with fs.open_output_stream(f"{root}/{s.name}/{file}") as f:
            f.write(content)
    return md
