"""Cross and Learn Tables 3–4: ours vs. only L_div vs. the "Concat" binary baseline vs. random
init, with optical flow and with frame differences as the second modality; linear-probe top-1
of both streams. One sweep (and table) per modality, each with its own random-init row.

    python experiments/cal_ablations.py                      # embedded synthetic set, < 10 min on 2 CPUs
    python experiments/cal_ablations.py --data D --labels L  # your prepared data
    python experiments/cal_ablations.py --paper --address auto
"""
import sys

from raysup.sweep import experiment_main

VARIANTS = ["cross_and_learn", "only_div", "concat"]

if __name__ == "__main__":
    for modality, title in [("flow", "RGB vs. optical flow"), ("diff", "RGB vs. frame differences")]:
        experiment_main(
            "cross_and_learn",
            f"Cross and Learn ablations, {title} (Tables 3-4)",
            name=f"cal_ablations_{modality}",
            grid={"method.variant": VARIANTS},
            paper_grid={"method.variant": VARIANTS},
            base={"method.modality": modality},
            quick_base={"epochs": 1},
            probe_folds=5,  # single-frame features: one 48-video split is too noisy
            argv=["--no-supervised", *sys.argv[1:]],
        )
