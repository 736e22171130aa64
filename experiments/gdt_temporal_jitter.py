"""GDT Table 1a: temporal jittering (a new clip of each video every epoch) on vs. off;
video and audio linear-probe top-1.

    python experiments/gdt_temporal_jitter.py                      # embedded synthetic set, < 10 min on 2 CPUs
    python experiments/gdt_temporal_jitter.py --data D --labels L  # your prepared data
"""
from raysup.sweep import Experiment, main

GRID = {"method.temporal_jitter": [True, False]}
# A.1 (papers/gdt.md L318): 100 epochs; "for subtable (a), we use the synchronized version without
# any audio augmentation and use 15K negatives" (the paper preset's queue_size 15000)
PAPER_BASE = {"epochs": 100, "method.sync": True, "method.specaugment": "none", "method.volume_jitter_db": 0.0}
TINY_BASE = {"epochs": 10}  # the tiny preset's

# Table 1a (papers/gdt.md L148-149): fold-1 top-1 after finetuning (A.2), the 100-epoch columns (A.1, L318)
PUBLISHED = {(True,): {"paper UCF101": 86.1, "paper HMDB51": 54.3}, (False,): {"paper UCF101": 71.2, "paper HMDB51": 44.4}}

EXPERIMENT = Experiment(
    "gdt",
    "GDT: temporal jittering (Table 1a)",
    name="gdt_temporal_jitter",
    grid=GRID,
    paper_grid=GRID,
    base=PAPER_BASE,
    tiny_base=TINY_BASE,
    quick_base={"epochs": 1},
    published=PUBLISHED,
)

if __name__ == "__main__":
    main(EXPERIMENT)
