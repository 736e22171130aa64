"""GDT Table 1b: SpecAugment strength (none / mild / strong) × synchronous vs. asynchronous
audio-video sampling; video and audio linear-probe top-1.

    python experiments/gdt_specaugment_sweep.py                      # embedded synthetic set, < 10 min on 2 CPUs
    python experiments/gdt_specaugment_sweep.py --data D --labels L  # your prepared data
    python experiments/gdt_specaugment_sweep.py --paper --address auto

The paper's Table 1b (papers/gdt.md L148-156) has four of the six rows (no SA async and sync,
mild and strong sync); the grid adds mild and strong async.
"""
from raysup.sweep import Experiment, main

GRID = {"method.specaugment": ["none", "mild", "strong"], "method.sync": [True, False]}  # mild/strong: L170
# A.1 (L318): the ablations train 100 epochs; the only audio augmentation is the SpecAugment under
# study (the official script's volume jitter off; the paper's text has none)
PAPER_BASE = {"epochs": 100, "method.volume_jitter_db": 0.0}
TINY_BASE = {"epochs": 10}  # the tiny preset's

# Table 1b (papers/gdt.md L155-158): fold-1 top-1 after finetuning (A.2), the 100-epoch columns
# (A.1, L318: the ablations pretrain 100 epochs); mild and strong async are not in the paper
PUBLISHED = {
    ("none", False): {"paper UCF101": 83.2, "paper HMDB51": 50.2},
    ("none", True): {"paper UCF101": 86.1, "paper HMDB51": 54.3},
    ("mild", True): {"paper UCF101": 86.1, "paper HMDB51": 54.7},
    ("strong", True): {"paper UCF101": 86.5, "paper HMDB51": 56.0},
}

EXPERIMENT = Experiment(
    "gdt",
    "GDT: SpecAugment x sync/async (Table 1b)",
    name="gdt_specaugment_sweep",
    grid=GRID,
    paper_grid=GRID,
    base=PAPER_BASE,
    tiny_base=TINY_BASE,
    quick_base={"epochs": 1},
    published=PUBLISHED,
)

if __name__ == "__main__":
    main(EXPERIMENT)
