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

EXPERIMENT = Experiment(
    "xdc",
    "XDC: number of clusters k (Table 2)",
    name="xdc_k_sweep",
    grid={"method.k": TINY_K},
    paper_grid={"method.k": PAPER_K},
    base=BASE,
    quick_base={"method.rounds": 1, "epochs": 1, "method.epoch_size": 1.0},
)

if __name__ == "__main__":
    main(EXPERIMENT)
