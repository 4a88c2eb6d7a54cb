"""Ablation CLI: the default step against itself with one rule off, on both held-out sets (docs/variants.md §7).

The samplers 'evodiff~<rule>' of bench.cores, on bench.stress_heldout's cells: python -m bench.ablation
"""
from __future__ import annotations

import time

import torch

from . import matrix
from .cells import HELDOUT, SETS, TUNING_CELLS, VALIDATION_CELLS, of_set
from .common import OUT, md_table, write_json
from .cores import SAMPLERS, rule_of
from .verdicts import against


def main() -> None:
    torch.set_num_threads(1)
    start = time.perf_counter()
    samplers = ("evodiff", *SAMPLERS, "euler", "dpmpp_2m")
    records = matrix.run(TUNING_CELLS + VALIDATION_CELLS, samplers, HELDOUT)
    out = OUT / "ablation"
    write_json(out / "results.json", records)
    lines = ["# Ablation of the default step's rules (held-out seed)\n",
             f"`python -m bench.ablation`, {time.perf_counter() - start:.0f} s. Each row: the default against the "
             "default with that rule off, by FD to the exact solution (noise rule of docs/stress.md). "
             "'rule helps' = the default is better beyond noise.\n"]
    rows = []
    for sampler in SAMPLERS:
        for set_name in SETS:
            found = against(of_set(records, set_name), sampler)
            rows.append([rule_of(sampler), set_name, len(found["won"]), len(found["tie"]), len(found["lost"]),
                         "; ".join(found["lost"]) or "—"])
    lines.append(md_table(["rule off", "set", "rule helps", "tie", "rule hurts", "where it hurts"], rows, "llrrrl"))
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
