"""Cross and Learn Tables 3–4: ours vs. only L_div vs. the "Concat" binary baseline vs. random
init, with optical flow and with frame differences as the second modality; linear-probe top-1
of both streams. One sweep over variant × modality, with a random-init row per modality.

    python experiments/cal_ablations.py                      # embedded synthetic set, < 10 min on 2 CPUs
    python experiments/cal_ablations.py --data D --labels L  # your prepared data
    python experiments/cal_ablations.py --paper --address auto
"""

from raysup.sweep import Experiment, main

VARIANTS = ["cross_and_learn", "only_div", "concat"]
MODALITIES = ["flow", "diff"]

EXPERIMENT = Experiment(
    "cross_and_learn",
    "Cross and Learn ablations, RGB vs. optical flow and vs. frame differences (Tables 3-4)",
    name="cal_ablations",
    grid={"method.variant": VARIANTS, "method.modality": MODALITIES},
    paper_grid={"method.variant": VARIANTS, "method.modality": MODALITIES},
    tiny_base={"epochs": 5},  # of the tiny preset's 10: six trials in three waves in < 10 min on 2 CPUs
    quick_base={"epochs": 1},
    probe_folds=5,  # single-frame features: one 48-video split is too noisy
    random_per=("method.modality",),
    supervised=False,  # a single-frame study: the video-and-audio supervised baseline has no row here
)

if __name__ == "__main__":
    main(EXPERIMENT)
