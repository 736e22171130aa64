"""XDC Table 2: number of clusters k vs. video and audio linear-probe top-1.

    python experiments/xdc_k_sweep.py                      # embedded synthetic set, < 10 min on 2 CPUs
    python experiments/xdc_k_sweep.py --data D --labels L  # your prepared data
    python experiments/xdc_k_sweep.py --paper --address auto
"""
from raysup.sweep import Experiment, main

PAPER_K = [64, 128, 256, 512, 1024]  # Table 2 (papers/xdc.md L117-125): Kinetics, 240K videos
TINY_K = [4, 8, 16, 32, 64]  # same doubling shape, scaled to the embedded set's ~480 clips
# Table 2 uses one k for both clusterings (L117): the paper preset's own k_video 64 / k_audio 128
# (Table 6) are reset to 0, "k"
BASE = {"method.k_video": 0, "method.k_audio": 0}

# Table 2, Kinetics rows (papers/xdc.md L123-125): split-1 top-1 after full finetuning per k;
# Scratch and Superv (Kinetics) from Table 3 (L137, L139)
_TABLE_2 = {"paper UCF101": [73.8, 73.1, 74.2, 74.0, 72.6], "paper HMDB51": [36.5, 39.0, 38.3, 37.7, 37.7],
            "paper ESC50": [78.0, 76.3, 75.0, 74.5, 71.5]}
PUBLISHED = {
    **{(k,): {c: v[i] for c, v in _TABLE_2.items()} for i, k in enumerate(PAPER_K)},
    ("random init",): {"paper UCF101": 54.5, "paper HMDB51": 24.1, "paper ESC50": 54.3},
    ("supervised",): {"paper UCF101": 90.9, "paper HMDB51": 58.0, "paper ESC50": 82.3},
}

EXPERIMENT = Experiment(
    "xdc",
    "XDC: number of clusters k (Table 2)",
    name="xdc_k_sweep",
    grid={"method.k": TINY_K},
    paper_grid={"method.k": PAPER_K},
    base=BASE,
    quick_base={"method.rounds": 1, "epochs": 1, "method.epoch_size": 1.0},
    published=PUBLISHED,
)

if __name__ == "__main__":
    main(EXPERIMENT)
