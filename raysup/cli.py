"""``raysup`` console script: synth, prepare, methods, config, train, probe, features, cluster, labels, sweep, dashboard, visualize-embeddings, export.

Errors the user can fix print one line on stderr and exit 2; anything else prints one line and
exits 1. Either way the traceback goes to a log file whose path is printed (``--debug``: shown).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from raysup import __version__
from raysup.config import ConfigError, parse_overrides
from raysup.data.storage import redact
from raysup.errors import ArgumentParser, report_errors
from raysup.runtime import init_ray


def cmd_synth(a) -> None:
    from raysup.data.synthetic import SynthConfig, make_synthetic

    cfg = SynthConfig(videos=a.videos, classes=a.classes, size=a.size, seconds=a.seconds, fps=a.fps, seed=a.seed)
    out = make_synthetic(a.out, cfg)
    print(f"wrote {cfg.videos} videos, labels.csv and splits/ to {out}")


def cmd_prepare(a) -> None:
    from raysup.config import from_dict
    from raysup.data.ingest import PreparedData
    from raysup.data.prepare import PrepareConfig, prepare

    cfg = from_dict(PrepareConfig, {k: v for k, v in {
        "clip_frames": a.clip_frames, "fps": a.fps, "size": a.size, "clip_stride_s": a.clip_stride,
        "max_clips_per_video": a.max_clips, "flow": a.flow, "audio_only": a.audio_only,
        "videos_per_shard": a.videos_per_shard, "cpus_per_task": a.cpus_per_task, "encoding": a.encoding,
        "jpeg_quality": a.jpeg_quality, "flow_range": a.flow_range, "audio_seconds": a.audio_seconds, "hop_ms": a.audio_hop_ms,
        "shard_mb": a.shard_mb, "width": a.width, "flow_step": a.flow_step,
    }.items() if v is not None})
    init_ray(a.address)
    m = prepare(a.src, a.out, cfg)
    c = m["counts"]
    print(f"{c['inputs']} inputs: {c['videos']} prepared into {c['clips']} clips, {c['skipped']} skipped, {c['no_audio']} without audio")
    for s in PreparedData(a.out).skipped:
        print(f"  skipped {redact(s['path'])}: {s['reason']}")
    print(f"manifest: {redact(a.out).rstrip('/')}/manifest.json")


def cmd_methods(a) -> None:
    from raysup.methods import method_module, method_names

    for name in method_names():
        mod = method_module(name)
        protocols = "yes" if getattr(mod, "PAPER_PROTOCOLS", ()) else "no"
        print(f"{name:<16} presets: {', '.join(mod.PRESETS):<28} paper protocols: {protocols:<4} {mod.__name__}")


def cmd_config(a) -> None:
    from raysup.config import to_dict
    from raysup.methods import make_config

    cfg = make_config(a.method, a.preset, parse_overrides(a.set or []))
    if a.protocol:
        from raysup.protocol_specs import describe
        from raysup.protocols import paper_protocols

        print(json.dumps([describe(p) for p in paper_protocols(cfg.method_name, None)], indent=1))
        return
    print(json.dumps(to_dict(cfg), indent=1))


def cmd_train(a) -> None:
    from raysup import runner
    from raysup.locks import RunLock
    from raysup.methods import make_config
    from raysup.resources import check_train_fits, node_shapes
    from raysup.train import check_resumable, data_identity, record_data

    overrides = parse_overrides(a.set or [])
    if a.workers is not None:
        overrides["workers"] = a.workers
    if a.gpus_per_worker is not None:
        overrides["gpus_per_worker"] = a.gpus_per_worker
    cfg = make_config(a.method, a.preset, overrides)
    data = runner.check(cfg, a.data)  # fail before starting Ray
    if a.resume:
        check_resumable(a.out)
    identity = data_identity(data, a.labels)
    RunLock(a.out).check()  # a run in progress there: refused before starting Ray
    init_ray(a.address)
    check_train_fits(cfg, runner.side_tasks(cfg), node_shapes())  # before writing anything
    with RunLock(a.out):
        record_data(a.out, identity, resume=a.resume)
        metrics = runner.train(cfg, data, a.out, labels=a.labels, resume=a.resume)
    print(json.dumps(metrics, indent=1, default=str))


def cmd_probe(a) -> None:
    from raysup import runner
    from raysup.protocol_specs import IMAGE_TASKS
    from raysup.protocols import paper_protocols

    run = runner.open_run(a.run_dir)
    cfg = run.cfg
    if a.protocol == "paper":
        protocols = paper_protocols(cfg.method_name, a.paper_task)
        if a.finetune or a.folds:
            raise ConfigError("--protocol paper: runs the paper's own protocol; drop --finetune/--folds")
    elif a.splits or a.paper_task != "action":
        raise ConfigError(f"{'--splits' if a.splits else '--paper-task'}: only with --protocol paper")
    weights = None if a.random_init else run.checkpoint
    if a.protocol == "paper" and a.paper_task in IMAGE_TASKS:  # --data is an image folder: no labels CSV, no Ray
        from raysup.image_protocols import run_image_protocols

        if a.labels or a.splits:
            raise ConfigError(f"--paper-task {a.paper_task}: the labels are the image folder's (--data); drop --labels/--splits")

        acc = run_image_protocols(cfg, a.data, weights, protocols, epochs=a.paper_epochs)
    else:
        acc = probe_prepared(a, cfg, weights, protocols if a.protocol == "paper" else ())
    record_probe(a, acc)
    if a.json:
        print(json.dumps(acc))
        return
    kind = "paper protocol" if a.protocol == "paper" else ("finetune" if a.finetune else "linear probe") + (f" ({a.folds}-fold CV)" if a.folds and not a.finetune else "")
    kind += " (random init)" if a.random_init else ""
    print(f"{'encoder':<10} {kind} top-1")
    for name, v in acc.items():
        print(f"{name:<10} {100 * v:6.2f}%")


def probe_prepared(a, cfg, weights: str | None, protocols) -> dict[str, float]:
    """``raysup probe`` on a prepared set and labels CSV(s): the paper ``protocols`` (those of
    ``--paper-task``), the finetuning, or the linear probe."""
    from raysup import runner
    from raysup.evaluate import cv_probe, probe
    from raysup.protocol_specs import AUDIO_TASKS
    from raysup.protocols import finetune_protocols, model_protocols, run_protocols

    if bool(a.labels) == bool(a.splits):
        raise ConfigError("probe: give --labels (or, with --protocol paper, --splits instead)")
    init_ray(a.address)
    data = runner.open_data(a.data, cfg)  # the crops the run trained on (centred)
    suffix = "/random_init" if a.random_init else ""
    if a.finetune:
        return run_protocols(cfg, data, a.labels, weights, f"{a.run_dir.rstrip('/')}.finetune{suffix}", finetune_protocols(cfg, data, epochs=a.epochs, batch_size=a.batch_size))
    if not protocols:
        return cv_probe(cfg, data, a.labels, weights, folds=a.folds) if a.folds else probe(cfg, data, a.labels, weights)
    protocols = model_protocols(protocols, cfg, data.specs)
    out = f"{a.run_dir.rstrip('/')}.paper_protocol{suffix}"
    if a.paper_task in AUDIO_TASKS:
        from raysup.audio_protocols import run_audio_protocols

        run_one = lambda csv, out_dir: run_audio_protocols(cfg, data, csv, weights, protocols, out_dir, epochs=a.paper_epochs,  # noqa: E731
                                                           clips_per_epoch=a.paper_epoch_clips)
    else:
        run_one = lambda csv, out_dir: run_protocols(cfg, data, csv, weights, out_dir, protocols, epochs=a.paper_epochs,  # noqa: E731
                                                     clips_per_epoch=a.paper_epoch_clips, classifier=a.paper_classifier)
    if a.splits:  # one protocol run per split's labels CSV, in out/split<i>; the mean per key
        runs = [run_one(csv, f"{out}/split{i}") for i, csv in enumerate(a.splits, 1)]
        return {k: float(sum(r[k] for r in runs) / len(runs)) for k in runs[0]}
    return run_one(a.labels, out)


def record_probe(a, acc: dict[str, float]) -> None:
    """Append a probe's results to ``RUN_DIR/probes.jsonl`` (``raysup export`` copies them into
    the card)."""
    from raysup.data.storage import resolve
    from raysup.train import append_line

    fs, root = resolve(a.run_dir)
    how = "paper protocol" if a.protocol == "paper" else "finetune" if a.finetune else f"{a.folds}-fold linear probe" if a.folds else "linear probe"
    append_line(fs, f"{root}/probes.jsonl", {"time": time.time(), "protocol": how, "random_init": a.random_init,
                                             "labels": [redact(x) for x in (a.splits or [a.labels or a.data])], "top1": acc})


def cmd_features(a) -> None:
    from raysup import runner
    from raysup.evaluate import clip_columns
    from raysup.features import write_features
    from raysup.methods import method_module

    run = runner.open_run(a.run_dir)
    data = runner.open_data(a.data, run.cfg)  # centre crops of the run's crop_size
    init_ray(a.address)
    write_features(data.dataset(clip_columns(run.cfg), crop="centre"), a.out, run.cfg, method_module(run.cfg.method_name).build, data.specs,
                   run.checkpoint, encoders=tuple(a.encoders) if a.encoders else None, actors=a.actors)
    print(f"wrote the features of {data.manifest['counts']['clips']} clips to {redact(a.out)}")


def cmd_cluster(a) -> None:
    from raysup.cluster_features import Clustering, cluster_features
    from raysup.clustering import KMeansConfig

    init_ray(a.address)
    settings = KMeansConfig(k=a.k, niter=a.niter, sample=a.sample or 0, pca_dim=a.pca_dim, cpus=a.cpus, gpus=a.gpus)
    stats = cluster_features(a.features, a.out, [Clustering("label", tuple(a.column))], settings, seed=a.seed)
    st = stats["label"]
    print(f"{stats['rows']} rows in {a.k} clusters (centroids trained on {stats['sample']}): {st['empty_clusters']} empty, "
          f"largest {100 * st['largest_cluster_fraction']:.1f}%, mean squared distance {st['objective']:.4g}")
    seconds = stats["seconds"]
    print(f"labels, centroids.npy and stats.json: {redact(a.out)} ({sum(seconds.values()):.1f} s: "
          + ", ".join(f"{stage} {s:.1f}" for stage, s in seconds.items()) + ")")


def cmd_labels(a) -> None:
    from raysup.data.labels import esc50_labels, hmdb51_labels, ucf101_labels, write_labels_csv

    fn = {"ucf101": ucf101_labels, "hmdb51": hmdb51_labels, "esc50": esc50_labels}[a.dataset]
    rows = fn(a.root, a.split)
    write_labels_csv(rows, a.out)
    print(f"wrote {len(rows)} rows to {a.out}")


def cmd_visualize_embeddings(a) -> None:
    from raysup.visualize import visualize_embeddings

    init_ray(a.address)
    paths = visualize_embeddings(a.run_dir, a.data, a.out, clips=a.clips)
    print(f"wrote {len(paths)} PNGs (frame | flow | embeddings) to {redact(paths[0].rsplit('/', 1)[0])}")


def cmd_sweep(a) -> None:
    from raysup.sweep import Sweep, run, space

    grid, sampled = space.parse_grid(a.grid), space.parse_sample(a.sample)
    if not (grid or sampled):
        raise ConfigError("sweep: give what to search, --grid key=v1,v2 and/or --sample key=DIST")
    search = a.search or ("random" if sampled else "grid")
    space.check_search(search, a.scheduler, a.metric or "", grid, sampled, a.samples)
    if a.scheduler == "pbt":
        space.check_pbt_method(a.method)
        if a.perturbation_interval < 1:
            raise ConfigError(f"--perturbation-interval: must be >= 1 epoch, got {a.perturbation_interval}")
    fixed = {**parse_overrides(a.set or []), **({"workers": a.workers} if a.workers else {}),
             **({"gpus_per_worker": a.gpus_per_worker} if a.gpus_per_worker is not None else {})}
    out, query = (a.out.rstrip("/").split("?", 1) + [""])[:2]  # a URI's options stay with its bucket
    storage, _, name = out.rpartition("/")
    if "://" not in a.out:
        storage, name = os.path.split(os.path.abspath(a.out))
    mode = a.mode or ("max" if (a.metric or "").startswith("probe_") else "min")
    s = Sweep(a.method, grid, a.data, a.labels, storage + (f"?{query}" if query else ""), name, preset=a.preset, base=fixed,
              max_concurrent=a.max_concurrent, probe_folds=a.probe_folds or 0, supervised=not a.no_supervised,
              space=sampled, samples=a.samples, search=search, scheduler=a.scheduler, metric=a.metric or "", mode=mode,
              perturbation_interval=a.perturbation_interval)
    title = f"{a.method}: {search} search over {', '.join([*grid, *sampled])}" + (f", {a.scheduler} on {s.metric}" if a.scheduler != "fifo" else "")
    run(s, title, address=a.address, resume=a.resume, overwrite=a.overwrite)


def cmd_dashboard(a) -> None:
    from raysup.dashboard import serve

    serve(a.path, port=a.port, host=a.host, address=a.address)


def cmd_export(a) -> None:
    from raysup.export import export

    card = export(a.run_dir, a.encoder, a.out, data=a.data, overwrite=a.overwrite)
    print(f"wrote the {a.encoder} encoder ({card['architecture']['name']}, {card['feature_dim']}-D features) to {a.out} "
          f"and its card (how to load and feed it, how it was trained) to {a.out}.json")


def parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="raysup", description=__doc__.split("\n")[0])
    p.add_argument("--version", action="version", version=f"raysup {__version__}")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error (default: written to a log file)")
    sub = p.add_subparsers(dest="command", required=True)
    address_help = "Ray cluster to join (e.g. auto; default: $RAY_ADDRESS, else start a local one)"

    s = sub.add_parser("synth", help="generate the embedded synthetic dataset (mp4 + labels.csv + splits)")
    s.add_argument("out", help="output folder")
    s.add_argument("--videos", type=int, default=240, help="number of videos")
    s.add_argument("--classes", type=int, default=6, help="number of hidden classes")
    s.add_argument("--size", type=int, default=64, help="frame height and width in pixels")
    s.add_argument("--seconds", type=float, default=4.0, help="length of each video")
    s.add_argument("--fps", type=int, default=16, help="frame rate of the written videos")
    s.add_argument("--seed", type=int, default=0, help="random seed (same seed, same files)")
    s.set_defaults(fn=cmd_synth)

    s = sub.add_parser("prepare", help="videos (folder or URI) → Parquet clips + manifest.json")
    s.add_argument("src", help="folder or URI of videos (searched recursively)")
    s.add_argument("out", help="output folder or URI (rerun on the same one to resume)")
    s.add_argument("--clip-frames", type=int, help="frames per clip (default 8)")
    s.add_argument("--fps", type=float, help="frames are resampled to this rate (default 8)")
    s.add_argument("--size", type=int, help="short side of the stored frames in pixels; readers get size×size crops (default 32)")
    s.add_argument("--width", type=int, help="resize every frame to size×width instead of keeping its aspect, e.g. --size 128 "
                   "--width 171 as GDT and VMZ do (default: own aspect)")
    s.add_argument("--clip-stride", type=float, help="seconds between clip starts (default: clip length)")
    s.add_argument("--max-clips", type=int, help="clips per video, evenly spaced (default: all)")
    s.add_argument("--flow", choices=["farneback", "tvl1", "dis", "none"], help="optical flow algorithm (default farneback)")
    s.add_argument("--flow-step", type=int, help="store flow t→t+N computed directly (cpfs' paper preset: 5, papers/cpfs.md L125; "
                   "raise --flow-range with it) instead of between consecutive frames (default 1)")
    s.add_argument("--audio-only", action="store_true", default=None, help="audio sets such as ESC-50 (no frames)")
    s.add_argument("--encoding", choices=["jpeg", "raw"], help="jpeg: compressed frames (own aspect) and flow, decoded while reading "
                   "(default); raw: fixed-size tensors, centre square")
    s.add_argument("--jpeg-quality", type=int, help="JPEG quality of the frames (default 92)")
    s.add_argument("--flow-range", type=float, help="jpeg: stored flow is clipped to ±this many px per frame (default 128)")
    s.add_argument("--audio-seconds", type=float, help="audio window per clip, centred on the clip (default: the clip's span)")
    s.add_argument("--audio-hop-ms", type=float, help="log-mel hop in ms (default 10; 20 gives XDC's 40×100 for 2 s)")
    s.add_argument("--videos-per-shard", type=int, help="input files per Ray Data task (default: up to 256, about two tasks per CPU of the cluster)")
    s.add_argument("--shard-mb", type=float, help="a Parquet shard (whole videos) is closed once its clips reach this many MB (default 256)")
    s.add_argument("--cpus-per-task", type=float, help="logical CPUs per Ray Data task (default 1)")
    s.add_argument("--address", help=address_help)
    s.set_defaults(fn=cmd_prepare)

    methods_help = "method name (`raysup methods` lists them)"
    set_help = "override a config field, e.g. optim.lr=0.01 (repeatable)"
    preset_help = "tiny (CPU, minutes), paper (the paper's settings) or another of the method's presets (`raysup methods`)"

    s = sub.add_parser("methods", help="list the methods (raysup's and installed plugins'), their presets and paper protocols")
    s.set_defaults(fn=cmd_methods)

    s = sub.add_parser("config", help="print the fully resolved config a train run would use, as JSON")
    s.add_argument("method", help=methods_help)
    s.add_argument("--preset", default="tiny", help=preset_help)
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help=set_help)
    s.add_argument("--protocol", action="store_true",
                   help="print the method's paper evaluation protocols instead (every setting, published numbers, paper lines), as JSON")
    s.set_defaults(fn=cmd_config)

    s = sub.add_parser("train", help="train a method with a Ray Train TorchTrainer")
    s.add_argument("method", help=methods_help)
    s.add_argument("--data", required=True, help="prepared folder or URI")
    s.add_argument("--out", required=True, help="run folder or URI (checkpoints, config.json, metrics)")
    s.add_argument("--labels", help="labels CSV (supervised baseline; cluster analysis)")
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help=set_help)
    s.add_argument("--workers", type=int, help="Ray Train workers (DDP across them)")
    s.add_argument("--gpus-per-worker", type=float, help="GPUs per train worker (0: CPU)")
    s.add_argument("--preset", default="tiny", help=preset_help)
    s.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    s.add_argument("--address", help=address_help)
    s.set_defaults(fn=cmd_train)

    s = sub.add_parser("probe", help="linear probe (or finetune) a run's encoders on labelled clips")
    s.add_argument("run_dir", help="run folder or URI of `raysup train`")
    s.add_argument("--data", required=True, help="prepared folder or URI of the labelled videos")
    s.add_argument("--labels", help="labels CSV (video_id,label,split); required unless --splits")
    s.add_argument("--random-init", action="store_true", help="probe the same architecture untrained")
    s.add_argument("--finetune", action="store_true", help="train each encoder with a new linear head instead")
    s.add_argument("--epochs", type=int, default=10, help="finetuning epochs")
    s.add_argument("--batch-size", type=int, default=32, help="finetuning batch size")
    s.add_argument("--folds", type=int, help="probe by grouped N-fold cross-validation over all labelled videos")
    s.add_argument("--protocol", choices=["linear", "paper"], default="linear",
                   help="linear: this probe; paper: the method's paper protocols (docs/reproducing.md), run in RUN_DIR.paper_protocol")
    s.add_argument("--paper-epochs", type=int, help="--protocol paper: finetuning epochs instead of the paper's (for a quick check)")
    s.add_argument("--paper-epoch-clips", type=int, metavar="N",
                   help="--protocol paper: clips per finetuning epoch instead of the paper's for the labels' set (0: one pass over the train clips)")
    s.add_argument("--paper-classifier", choices=["linear", "svm"], default="linear",
                   help="--protocol paper, GDT's audio: linear layer (ESC-50's protocol) or linear SVM (DCASE's)")
    s.add_argument("--splits", nargs="+", metavar="CSV",
                   help="--protocol paper: one labels CSV per split (e.g. UCF101's three); prints the mean over splits")
    s.add_argument("--paper-task", choices=["action", "esc50", "dcase", "imagenet", "voc07"], default="action",
                   help="--protocol paper: the downstream set (action: UCF101/HMDB51 labels; esc50/dcase: a prepared --audio-only set; "
                        "imagenet: --data is an ImageFolder root with train/ and val/; voc07: --data is a PASCAL VOC folder)")
    s.add_argument("--json", action="store_true", help="print {encoder: top-1 in [0,1]}")
    s.add_argument("--address", help=address_help)
    s.set_defaults(fn=cmd_probe)

    s = sub.add_parser("features", help="a run's frozen features of every clip → Parquet (video_id, clip_index, one vector column per encoder)")
    s.add_argument("run_dir", help="run folder or URI of `raysup train` (its last checkpoint)")
    s.add_argument("--data", required=True, help="prepared folder or URI of the clips")
    s.add_argument("--out", required=True, help="new folder or URI for the Parquet files")
    s.add_argument("--encoders", nargs="+", metavar="NAME", help="encoders to keep, e.g. video audio (default: all of the method's)")
    s.add_argument("--actors", type=int, default=1, help="feature-extraction actors at most (each with the run's gpus_per_worker GPUs)")
    s.add_argument("--address", help=address_help)
    s.set_defaults(fn=cmd_features)

    s = sub.add_parser("cluster", help="k-means of a features Parquet folder (centroids from a sample, every row assigned) → labels Parquet")
    s.add_argument("features", help="Parquet folder or URI with video_id, clip_index and vector columns (e.g. `raysup features`)")
    s.add_argument("--column", action="append", required=True, metavar="NAME",
                   help="vector column to cluster; repeat it to cluster the columns L2-normalised and concatenated")
    s.add_argument("--k", type=int, required=True, help="number of clusters")
    s.add_argument("--out", required=True, help="new folder or URI: labels Parquet (video_id, clip_index, label, label_distance), centroids.npy, stats.json")
    s.add_argument("--sample", type=int, help="rows the centroids are trained on (default: 512 per cluster, all rows if fewer)")
    s.add_argument("--niter", type=int, default=20, help="k-means iterations")
    s.add_argument("--seed", type=int, default=0, help="seed of the sample and of k-means")
    s.add_argument("--pca-dim", type=int, default=0, help="PCA-whitening to this dimension, fitted on the sample (0: off)")
    s.add_argument("--cpus", type=float, default=1, help="CPUs of the k-means task (faiss threads)")
    s.add_argument("--gpus", type=float, default=0, help="GPUs of the k-means task (GPU faiss if > 0)")
    s.add_argument("--address", help=address_help)
    s.set_defaults(fn=cmd_cluster)

    s = sub.add_parser("labels", help="official split files → labels CSV (video_id,label,split)")
    s.add_argument("dataset", choices=["ucf101", "hmdb51", "esc50"], help="which dataset's split files")
    s.add_argument("root", help="folder holding the dataset's split files")
    s.add_argument("out", help="labels CSV to write")
    s.add_argument("--split", type=int, default=1, help="split (UCF101/HMDB51: 1-3) or test fold (ESC-50: 1-5)")
    s.set_defaults(fn=cmd_labels)

    s = sub.add_parser("visualize-embeddings", help="PNGs of frames, flow and pixel embeddings of a cpfs run (paper Fig. 4)")
    s.add_argument("run_dir", help="run folder or URI of a cpfs or cpfs_direct run")
    s.add_argument("--data", required=True, help="prepared folder or URI (needs flow)")
    s.add_argument("--out", help="output folder (default: RUN_DIR/embeddings)")
    s.add_argument("--clips", type=int, default=8, help="number of clips to draw")
    s.add_argument("--address", help=address_help)
    s.set_defaults(fn=cmd_visualize_embeddings)

    s = sub.add_parser("sweep", help="your own hyperparameter search: grid, random, Optuna or HyperOpt, with ASHA stopping bad trials; a results table, CSV and plot")
    s.add_argument("method", help=methods_help)
    s.add_argument("--data", required=True, help="prepared folder or URI")
    s.add_argument("--labels", required=True, help="labels CSV for the probe (and the supervised baseline)")
    s.add_argument("--out", required=True, help="the sweep's folder or URI (Tune's results, runs/, results.csv/.md/.png)")
    s.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2", help="every value is a trial, e.g. method.k=4,8,16 (repeatable)")
    s.add_argument("--sample", action="append", default=[], metavar="KEY=DIST", help="each trial draws a value: loguniform:LOW:HIGH, "
                   "uniform:LOW:HIGH, randint:LOW:HIGH (HIGH excluded) or choice:a,b,c, e.g. optim.lr=loguniform:1e-4:1e-2 (repeatable)")
    s.add_argument("--samples", type=int, default=1, help="trials per grid point (optuna, hyperopt: in all)")
    s.add_argument("--search", choices=["grid", "random", "optuna", "hyperopt"], help="Tune's search: grid or random (default: random "
                   "with --sample, else grid), optuna or hyperopt (pip install -e '.[search]')")
    s.add_argument("--scheduler", choices=["fifo", "asha", "pbt"], default="fifo", help="fifo: every trial runs to its end; asha: stop trials "
                   "whose --metric trails the others' at the same epoch; pbt: population based training, the worst trials continue from the best ones' "
                   "checkpoints with perturbed lr, weight decay, temperatures (docs/sweeps.md)")
    s.add_argument("--perturbation-interval", type=int, default=1, metavar="EPOCHS", help="pbt: epochs between two comparisons of the trials")
    s.add_argument("--metric", help="what --scheduler and optuna/hyperopt compare: a per-epoch metric of the method (loss, val_loss, ...) "
                   "or, for searchers only, the final probe_<encoder>")
    s.add_argument("--mode", choices=["min", "max"], help="minimise or maximise --metric (default: max for probe_*, else min)")
    s.add_argument("--max-concurrent", type=int, default=2, help="trials at once")
    s.add_argument("--preset", default="tiny", help=preset_help)
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help="fixed override for every trial (repeatable)")
    s.add_argument("--workers", type=int, help="train workers per trial")
    s.add_argument("--gpus-per-worker", type=float, help="GPUs per train worker")
    s.add_argument("--probe-folds", type=int, help="probe by grouped N-fold cross-validation instead of the labels' test split")
    s.add_argument("--no-supervised", action="store_true", help="skip the supervised baseline")
    s.add_argument("--resume", action="store_true", help="continue a sweep whose driver was killed (same arguments)")
    s.add_argument("--overwrite", action="store_true", help="start the sweep in --out over (deletes only what the sweep wrote)")
    s.add_argument("--address", help=address_help)
    s.set_defaults(fn=cmd_sweep)

    s = sub.add_parser("dashboard", help="TensorBoard over a run or sweep folder (or URI); prints it and the Ray dashboard's URL")
    s.add_argument("path", metavar="RUN_OR_SWEEP_DIR", help="run or sweep folder, or an s3:// URI (mirrored locally)")
    s.add_argument("--port", type=int, default=6006, help="TensorBoard port (0: any free port)")
    s.add_argument("--host", default="127.0.0.1", help="TensorBoard address (default: this machine only)")
    s.add_argument("--address", default="auto", help="Ray cluster whose dashboard to show (default: the one running here)")
    s.set_defaults(fn=cmd_dashboard)

    s = sub.add_parser("export", help="one encoder of a run as a plain state_dict (.pt) + a JSON card (architecture, input, training)")
    s.add_argument("run_dir", help="run folder or URI of `raysup train` (its last checkpoint)")
    s.add_argument("--encoder", required=True, help="which encoder: video, audio, rgb, flow or diff (the method's)")
    s.add_argument("--out", required=True, help="local file to write (.pt); the card goes to FILE.json")
    s.add_argument("--data", help="prepared folder or URI the model is built for (default: the one the run's data.json records)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing FILE and FILE.json")
    s.set_defaults(fn=cmd_export)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return report_errors(f"raysup {args.command}", args.command, lambda: args.fn(args), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
