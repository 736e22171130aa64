"""GDT Table 1b: SpecAugment strength (none / mild / strong) × synchronous vs. asynchronous
audio-video sampling; video and audio linear-probe top-1.

    python experiments/gdt_specaugment_sweep.py                      # embedded synthetic set, < 10 min on 2 CPUs
    python experiments/gdt_specaugment_sweep.py --data D --labels L  # your prepared data
    python experiments/gdt_specaugment_sweep.py --paper --address auto
"""

from raysup.sweep import Experiment, main

GRID = {"method.specaugment": ["none", "mild", "strong"], "method.sync": [True, False]}

EXPERIMENT = Experiment(
    "gdt",
    "GDT: SpecAugment x sync/async (Table 1b)",
    name="gdt_specaugment_sweep",
    grid=GRID,
    paper_grid=GRID,
    quick_base={"epochs": 1},
)

if __name__ == "__main__":
    main(EXPERIMENT)
