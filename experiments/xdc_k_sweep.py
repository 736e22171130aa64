"""XDC Table 2: number of clusters k vs. video and audio linear-probe top-1.

    python experiments/xdc_k_sweep.py                      # embedded synthetic set, < 10 min on 2 CPUs
    python experiments/xdc_k_sweep.py --data D --labels L  # your prepared data
    python experiments/xdc_k_sweep.py --paper --address auto
"""

from raysup.sweep import Experiment, main

PAPER_K = [64, 128, 256, 512, 1024]  # the paper's grid (Kinetics: 240k videos)
TINY_K = [4, 8, 16, 32, 64]  # same doubling shape, scaled to the embedded set's ~480 clips

EXPERIMENT = Experiment(
    "xdc",
    "XDC: number of clusters k (Table 2)",
    name="xdc_k_sweep",
    grid={"method.k": TINY_K},
    paper_grid={"method.k": PAPER_K},
    quick_base={"method.rounds": 1, "epochs": 1, "method.epoch_size": 1.0},
)

if __name__ == "__main__":
    main(EXPERIMENT)
