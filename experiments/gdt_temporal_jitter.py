"""GDT Table 1a: temporal jittering (a new clip of each video every epoch) on vs. off;
video and audio linear-probe top-1.

    python experiments/gdt_temporal_jitter.py                      # embedded synthetic set, < 10 min on 2 CPUs
    python experiments/gdt_temporal_jitter.py --data D --labels L  # your prepared data
"""

from raysup.sweep import Experiment, main

GRID = {"method.temporal_jitter": [True, False]}

EXPERIMENT = Experiment(
    "gdt",
    "GDT: temporal jittering (Table 1a)",
    name="gdt_temporal_jitter",
    grid=GRID,
    paper_grid=GRID,
    quick_base={"epochs": 1},
)

if __name__ == "__main__":
    main(EXPERIMENT)
