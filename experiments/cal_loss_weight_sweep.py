"""Cross and Learn §3: the weight w of L_div in L_cross − w·L_div vs. RGB and flow linear-probe
top-1 (w = 0 is L_cross alone, which collapses; a large w slows learning).

    python experiments/cal_loss_weight_sweep.py                      # embedded synthetic set, < 10 min on 2 CPUs
    python experiments/cal_loss_weight_sweep.py --data D --labels L  # your prepared data
    python experiments/cal_loss_weight_sweep.py --paper --address auto

The supervised baseline (an R(2+1)D video net) is skipped: it is not the two-stream
architecture; random init of the same network is the baseline row.
"""

from raysup.sweep import Experiment, main

PAPER_W = [0.0, 0.25, 0.5, 1.0, 2.0, 4.0]
TINY_W = [0.0, 0.5, 1.0, 2.0]

# the paper reports only w = 1 (eq. 4, L_cross − L_div) and random weights: Table 3 (papers/cross-and-learn.md
# L180-183), split-1 top-1 of the finetuned RGB and OF networks
PUBLISHED = {
    (1.0,): {"paper UCF101 rgb": 59.3, "paper HMDB51 rgb": 27.7, "paper UCF101 flow": 79.2, "paper HMDB51 flow": 51.7},
    ("random init",): {"paper UCF101 rgb": 49.1, "paper HMDB51 rgb": 19.2, "paper UCF101 flow": 76.4, "paper HMDB51 flow": 47.1},
}

EXPERIMENT = Experiment(
    "cross_and_learn",
    "Cross and Learn: loss weight w of L_div",
    name="cal_loss_weight_sweep",
    grid={"method.div_weight": TINY_W},
    paper_grid={"method.div_weight": PAPER_W},
    quick_base={"epochs": 1},
    probe_folds=5,  # single-frame features: one 48-video split is too noisy
    supervised=False,  # a single-frame study: the video-and-audio supervised baseline has no row here
    published=PUBLISHED,
)

if __name__ == "__main__":
    main(EXPERIMENT)
