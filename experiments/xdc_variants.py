"""XDC Table 1: SDC vs. MDC vs. CDC vs. XDC (single-, multi-, concatenated- and cross-modal
deep clustering) and the same-modality-XDC baselines (two video encoders, ``xdc_2video``; two
audio encoders, ``xdc_2audio``; papers/xdc.md L105-115) at a fixed k; linear-probe top-1 of
every encoder (``video2``/``audio2``: a same-modality baseline's second encoder).

One k for every clustering of every variant, so the variants differ only in what they cluster
(CDC has a single joint clustering). The paper does not state Table 1's k (its XDC row equals
Table 2's best k per task, papers/xdc.md L109-111 and L123-125); --paper uses 128, Table 2's best
for HMDB51 (ours).
"""
from raysup.sweep import Experiment, main

GRID = {"method.variant": ["sdc", "mdc", "cdc", "xdc", "xdc_2video", "xdc_2audio"]}  # Table 1's columns (L105-115)
BASE = {"method.k": 128, "method.k_video": 0, "method.k_audio": 0}  # k_video/k_audio 0: both at k
TINY_BASE = {"method.k": 16}

EXPERIMENT = Experiment(
    "xdc",
    "Deep clustering variants (XDC Table 1)",
    name="xdc_variants",
    grid=GRID,
    paper_grid=GRID,
    base=BASE,
    tiny_base=TINY_BASE,
    quick_base={"method.rounds": 1, "epochs": 1, "method.epoch_size": 1.0},
)

if __name__ == "__main__":
    main(EXPERIMENT)
