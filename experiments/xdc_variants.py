"""XDC Table 1: SDC vs. MDC vs. CDC vs. XDC (single-, multi-, concatenated- and cross-modal
deep clustering) at a fixed k; video and audio linear-probe top-1."""

from raysup.sweep import Experiment, main

EXPERIMENT = Experiment(
    "xdc",
    "Deep clustering variants (XDC Table 1)",
    name="xdc_variants",
    grid={"method.variant": ["sdc", "mdc", "cdc", "xdc"]},
    paper_grid={"method.variant": ["sdc", "mdc", "cdc", "xdc"]},
    base={"method.k": 16},
    quick_base={"method.rounds": 1, "epochs": 1, "method.epoch_size": 1.0},
)

if __name__ == "__main__":
    main(EXPERIMENT)
