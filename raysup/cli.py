"""``raysup`` console script: synth, prepare, train, probe, labels, dashboard."""
from __future__ import annotations

import argparse
import json
import os
import sys

from raysup.config import ConfigError, parse_overrides
from raysup.runtime import init_ray


def cmd_synth(a) -> None:
    from raysup.data.synthetic import SynthConfig, make_synthetic

    cfg = SynthConfig(videos=a.videos, classes=a.classes, size=a.size, seconds=a.seconds, fps=a.fps, seed=a.seed)
    out = make_synthetic(a.out, cfg)
    print(f"wrote {cfg.videos} videos, labels.csv and splits/ to {out}")


def cmd_prepare(a) -> None:
    from raysup.config import from_dict
    from raysup.data.prepare import PrepareConfig, prepare

    cfg = from_dict(PrepareConfig, {k: v for k, v in {
        "clip_frames": a.clip_frames, "fps": a.fps, "size": a.size, "clip_stride_s": a.clip_stride,
        "max_clips_per_video": a.max_clips, "flow": a.flow, "audio_only": a.audio_only,
        "videos_per_shard": a.videos_per_shard, "cpus_per_task": a.cpus_per_task,
    }.items() if v is not None})
    init_ray(a.address)
    m = prepare(a.src, a.out, cfg)
    c = m["counts"]
    print(f"{c['inputs']} inputs: {c['videos']} prepared into {c['clips']} clips, {c['skipped']} skipped, {c['no_audio']} without audio")
    for s in m["skipped"]:
        print(f"  skipped {s['path']}: {s['reason']}")
    print(f"manifest: {a.out.rstrip('/')}/manifest.json")


def cmd_train(a) -> None:
    from raysup.data.ingest import PreparedData
    from raysup.methods import make_config, method_module

    overrides = parse_overrides(a.set or [])
    if a.workers is not None:
        overrides["workers"] = a.workers
    if a.gpus_per_worker is not None:
        overrides["gpus_per_worker"] = a.gpus_per_worker
    cfg = make_config(a.method, a.preset, overrides)
    data = PreparedData(a.data)
    data.manifest  # fail early on a folder that was not prepared
    init_ray(a.address)
    metrics = method_module(cfg.method_name).run(cfg, data, a.out, labels=a.labels, resume=a.resume)
    print(json.dumps(metrics, indent=1, default=str))


def cmd_probe(a) -> None:
    from raysup.data.ingest import PreparedData
    from raysup.evaluate import cv_probe, finetune, probe
    from raysup.methods import load_config
    from raysup.train import latest_checkpoint, load_checkpoint_file

    ckpt = latest_checkpoint(a.run_dir)
    cfg = load_config(load_checkpoint_file(ckpt)["config"])
    init_ray(a.address)
    data = PreparedData(a.data)
    weights = None if a.random_init else ckpt
    if a.finetune:
        acc = finetune(cfg, data, a.labels, weights, epochs=a.epochs)
    elif a.folds:
        acc = cv_probe(cfg, data, a.labels, weights, folds=a.folds)
    else:
        acc = probe(cfg, data, a.labels, weights)
    if a.json:
        print(json.dumps(acc))
        return
    kind = ("finetune" if a.finetune else "linear probe") + (f" ({a.folds}-fold CV)" if a.folds and not a.finetune else "")
    kind += " (random init)" if a.random_init else ""
    print(f"{'encoder':<10} {kind} top-1")
    for name, v in acc.items():
        print(f"{name:<10} {100 * v:6.2f}%")


def cmd_labels(a) -> None:
    from raysup.data.labels import esc50_labels, hmdb51_labels, ucf101_labels, write_labels_csv

    fn = {"ucf101": ucf101_labels, "hmdb51": hmdb51_labels, "esc50": esc50_labels}[a.dataset]
    rows = fn(a.root, a.split)
    write_labels_csv(rows, a.out)
    print(f"wrote {len(rows)} rows to {a.out}")


def cmd_visualize_embeddings(a) -> None:
    from raysup.data.ingest import PreparedData
    from raysup.visualize import visualize_embeddings

    init_ray(a.address)
    paths = visualize_embeddings(a.run_dir, PreparedData(a.data), a.out, clips=a.clips)
    print(f"wrote {len(paths)} PNGs (frame | flow | embeddings) to {paths[0].rsplit('/', 1)[0]}")


def cmd_dashboard(a) -> None:
    from raysup.dashboard import serve

    serve(a.path, port=a.port, host=a.host, address=a.address)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="raysup", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("synth", help="generate the embedded synthetic dataset (mp4 + labels.csv + splits)")
    s.add_argument("out")
    s.add_argument("--videos", type=int, default=240)
    s.add_argument("--classes", type=int, default=6)
    s.add_argument("--size", type=int, default=64)
    s.add_argument("--seconds", type=float, default=4.0)
    s.add_argument("--fps", type=int, default=16)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(fn=cmd_synth)

    s = sub.add_parser("prepare", help="videos (folder or URI) → Parquet clips + manifest.json")
    s.add_argument("src")
    s.add_argument("out")
    s.add_argument("--clip-frames", type=int)
    s.add_argument("--fps", type=float)
    s.add_argument("--size", type=int)
    s.add_argument("--clip-stride", type=float, help="seconds between clip starts (default: clip length)")
    s.add_argument("--max-clips", type=int, help="clips per video, evenly spaced (default: all)")
    s.add_argument("--flow", choices=["farneback", "tvl1", "dis", "none"])
    s.add_argument("--audio-only", action="store_true", default=None, help="audio sets such as ESC-50 (no frames)")
    s.add_argument("--videos-per-shard", type=int)
    s.add_argument("--cpus-per-task", type=float)
    s.add_argument("--address", help="Ray cluster address (default: start a local one)")
    s.set_defaults(fn=cmd_prepare)

    s = sub.add_parser("train", help="train a method with a Ray Train TorchTrainer")
    s.add_argument("method")
    s.add_argument("--data", required=True, help="prepared folder or URI")
    s.add_argument("--out", required=True, help="run folder or URI (checkpoints, config.json)")
    s.add_argument("--labels", help="labels CSV (supervised baseline; cluster analysis)")
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field, e.g. optim.lr=0.01")
    s.add_argument("--workers", type=int)
    s.add_argument("--gpus-per-worker", type=float)
    s.add_argument("--preset", choices=["tiny", "paper"], default="tiny")
    s.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    s.add_argument("--address")
    s.set_defaults(fn=cmd_train)

    s = sub.add_parser("probe", help="linear probe (or finetune) a run's encoders on labelled clips")
    s.add_argument("run_dir")
    s.add_argument("--data", required=True)
    s.add_argument("--labels", required=True)
    s.add_argument("--random-init", action="store_true", help="probe the same architecture untrained")
    s.add_argument("--finetune", action="store_true")
    s.add_argument("--epochs", type=int, default=10, help="finetuning epochs")
    s.add_argument("--folds", type=int, help="probe by grouped N-fold cross-validation over all labelled videos")
    s.add_argument("--json", action="store_true", help="print {encoder: top-1 in [0,1]}")
    s.add_argument("--address")
    s.set_defaults(fn=cmd_probe)

    s = sub.add_parser("labels", help="official split files → labels CSV (video_id,label,split)")
    s.add_argument("dataset", choices=["ucf101", "hmdb51", "esc50"])
    s.add_argument("root")
    s.add_argument("out")
    s.add_argument("--split", type=int, default=1, help="split (UCF101/HMDB51: 1-3) or test fold (ESC-50: 1-5)")
    s.set_defaults(fn=cmd_labels)

    s = sub.add_parser("visualize-embeddings", help="PNGs of frames, flow and pixel embeddings of a cpfs run (paper Fig. 4)")
    s.add_argument("run_dir")
    s.add_argument("--data", required=True, help="prepared folder or URI (needs flow)")
    s.add_argument("--out", help="output folder (default: RUN_DIR/embeddings)")
    s.add_argument("--clips", type=int, default=8)
    s.add_argument("--address")
    s.set_defaults(fn=cmd_visualize_embeddings)

    s = sub.add_parser("dashboard", help="TensorBoard over a run or sweep folder (or URI); prints it and the Ray dashboard's URL")
    s.add_argument("path", metavar="RUN_OR_SWEEP_DIR")
    s.add_argument("--port", type=int, default=6006, help="TensorBoard port (0: any free port)")
    s.add_argument("--host", default="127.0.0.1", help="TensorBoard address (default: this machine only)")
    s.add_argument("--address", default="auto", help="Ray cluster whose dashboard to show (default: the one running here)")
    s.set_defaults(fn=cmd_dashboard)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        args.fn(args)
    except (ConfigError, FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"raysup {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
