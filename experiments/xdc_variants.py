"""XDC Table 1: SDC vs. MDC vs. CDC vs. XDC (single-, multi-, concatenated- and cross-modal
deep clustering) at a fixed k; video and audio linear-probe top-1."""
import sys

from raysup.sweep import experiment_main

if __name__ == "__main__":
    experiment_main(
        "xdc",
        "Deep clustering variants (XDC Table 1)",
        name="xdc_variants",
        grid={"method.variant": ["sdc", "mdc", "cdc", "xdc"]},
        paper_grid={"method.variant": ["sdc", "mdc", "cdc", "xdc"]},
        base={"method.k": 16},
        quick_base={"method.rounds": 1, "epochs": 1, "method.epoch_size": 1.0},
        argv=sys.argv[1:],
    )
