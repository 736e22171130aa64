"""XDC's finetuning with a cross-validated base lr (papers/xdc.md L402, Tables 11-12 L412-423): one
Ray Tune trial per lr of Table 12 finetunes the run's video encoder (with ``--audio``, its audio
encoder on ESC-50, Table 11's ESC50 row) on the train split less a held-out tenth of its videos
and scores that tenth; the best lr is finetuned on the whole train
split and tested (raysup.sweep.lr_cv).

    python experiments/xdc_finetune_lr_cv.py RUN_DIR --data UCF101_PREPARED --labels ucf101_split1.csv
    python experiments/xdc_finetune_lr_cv.py RUN_DIR --data D --labels L --fc-only   # Table 12's FC-only grid
    python experiments/xdc_finetune_lr_cv.py RUN_DIR --data D32 --labels L --long-clips  # Table 7: 32-frame clips, batch 8, lr / 4
    python experiments/xdc_finetune_lr_cv.py RUN_DIR --data ESC50_AUDIO --labels esc50_fold1.csv --audio  # Table 11's ESC50 row: the audio encoder
    python experiments/xdc_finetune_lr_cv.py RUN_DIR --data D --labels L --lrs 0.001,0.01 --epochs 2 --batch-size 8  # a quick check
"""
from __future__ import annotations

import dataclasses
import json

from raysup.methods.xdc import FINETUNE_LRS, PAPER_PROTOCOLS


def main(argv: list[str] | None = None) -> dict:
    from raysup.cli import ArgumentParser, report_errors

    p = ArgumentParser(description="XDC finetuning with the lr cross-validated as a Ray Tune sweep (Tables 11-12)")
    p.add_argument("run_dir", help="the pretrained run (raysup train xdc … --out RUN_DIR), or any run whose encoder is 'video'")
    p.add_argument("--data", required=True, help="the downstream set's prepared folder or URI (e.g. UCF101)")
    p.add_argument("--labels", required=True, help="its labels CSV (train and test split)")
    p.add_argument("--fc-only", action="store_true", help="the linear head on frozen features (Table 12's FC-only grid)")
    p.add_argument("--long-clips", action="store_true", help="32-frame clips (Table 7, L402): batch 8, Table 12's lrs / 4")
    p.add_argument("--audio", action="store_true", help="ESC-50 (Table 11's ESC50 row, L417): the audio encoder on a prepared "
                   "--audio-only set of 2 s windows (docs/reproducing.md), --labels with one fold as the test split")
    p.add_argument("--lrs", help="comma-separated base lrs (default: Table 12's grid)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="train videos held out to pick the lr (ours: the paper is silent)")
    p.add_argument("--epochs", type=int, help="finetuning epochs instead of Table 11's 8 (a quick check)")
    p.add_argument("--batch-size", type=int, help="finetuning batch instead of Table 11's 32 (a quick check on a small set)")
    p.add_argument("--max-concurrent", type=int, default=2, help="lr trials at once")
    p.add_argument("--out", help="where the trials write (default: RUN_DIR.lr_cv[_fc])")
    p.add_argument("--address", help="Ray cluster address, e.g. auto")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    a = p.parse_args(argv)
    result = []
    code = report_errors(p.prog, "xdc_finetune_lr_cv", lambda: result.append(_run(a)), debug=a.debug)
    if code:
        raise SystemExit(code)
    print(json.dumps(result[0], indent=1))
    return result[0]


def _run(a) -> dict:
    from raysup import runner
    from raysup.audio_protocols import check_audio, labelled_counts
    from raysup.config import ConfigError
    from raysup.data.labels import read_labels_csv
    from raysup.runtime import init_ray
    from raysup.sweep.lr_cv import lr_cv

    if a.audio and a.long_clips:
        raise ConfigError("--long-clips: Table 7's 32-frame clips are the video encoder's; not with --audio")
    key = ("esc50" if a.audio else "video") + ("_fc" if a.fc_only else "")
    protocol = next(pr for pr in PAPER_PROTOCOLS if pr.key == key)
    # L402: "when finetuning R(2+1)D on longer clips (i.e. 32 frames), we reduce the mini-batch size
    # to 8 and reduce the base learning rate to 1/4 of its original rate"
    long = {"batch": 8, "lr": 0.25} if a.long_clips else {"batch": protocol.batch_size, "lr": 1.0}
    protocol = dataclasses.replace(protocol, batch_size=a.batch_size or long["batch"])
    lrs = tuple(float(v) for v in a.lrs.split(",")) if a.lrs else tuple(lr * long["lr"] for lr in FINETUNE_LRS[key])
    init_ray(a.address)
    run = runner.open_run(a.run_dir)
    if a.audio:  # the set serves the protocol: 2 s windows, 10 per test recording (as raysup probe --paper-task esc50 checks)
        data = runner.open_data(a.data, run.cfg)
        check_audio(protocol, data, labelled_counts(data, read_labels_csv(a.labels))[1])
    out = a.out or f"{a.run_dir.rstrip('/')}.lr_cv{'_esc50' if a.audio else ''}{'_fc' if a.fc_only else ''}"
    return lr_cv(run.cfg, a.data, a.labels, run.checkpoint, out, protocol, lrs, val_fraction=a.val_fraction,
                 max_concurrent=a.max_concurrent, epochs=a.epochs)


if __name__ == "__main__":
    main()
