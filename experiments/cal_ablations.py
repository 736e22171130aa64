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


def _split1(ucf_rgb, hmdb_rgb, ucf_2nd=None, hmdb_2nd=None):
    """Split-1 top-1 after finetuning (papers/cross-and-learn.md L113): the RGB network and the
    second modality's (flow or frame differences) network."""
    cols = {"paper UCF101 rgb": ucf_rgb, "paper HMDB51 rgb": hmdb_rgb, "paper UCF101 2nd": ucf_2nd, "paper HMDB51 2nd": hmdb_2nd}
    return {k: v for k, v in cols.items() if v is not None}


# Table 3 (L180-183): RGB and OF, RGB and SOD; Table 4 (L201-208, RGB and OF only): only L_div, Concat
PUBLISHED = {
    ("cross_and_learn", "flow"): _split1(59.3, 27.7, 79.2, 51.7),
    ("cross_and_learn", "diff"): _split1(55.4, 23.5, 66.3, 33.3),
    ("only_div", "flow"): _split1(49.0, 18.0, 75.3, 47.2),
    ("concat", "flow"): _split1(57.6, 24.5, 77.8, 49.9),
    ("random init (flow)",): _split1(49.1, 19.2, 76.4, 47.1),
    ("random init (diff)",): _split1(49.1, 19.2, 64.5, 30.8),
}

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
    published=PUBLISHED,
)

if __name__ == "__main__":
    main(EXPERIMENT)
