"""The held-out stress run the README's verdict comes from: a subset of the full matrix (every
axis represented: guidance on the analytic and the learned model, EDM 80→0.002, flow shift 1/3/6,
five SD1.5 schedulers) on the held-out noise seed, at NFE 5–30. About 10 minutes on 2 cores;
the whole matrix (`scripts/stress --full`) takes over an hour.

    .venv/bin/python -m bench.stress_heldout      # -> docs/stress.md and bench_out/stress/heldout/
"""
from __future__ import annotations

import json
import sys
import time

import torch

from . import quality, report, stress
from .stress import ROOT, Cell

CELLS = (Cell("mixture-cfg", "eps", "karras", 1.0), Cell("mixture-cfg", "eps", "karras", 4.0),
         Cell("mixture-cfg", "eps", "karras", 7.0), Cell("mixture-cfg", "eps", "normal", 4.0),
         Cell("mixture-cfg", "edm", "karras", 4.0), Cell("mixture-cfg", "flow3", "simple", 4.0),
         Cell("digits-cfg", "eps", "karras", 3.0), Cell("digits-cfg", "eps", "karras", 5.0),
         Cell("digits-cfg", "flow3", "simple", 3.0),
         Cell("mixture", "edm", "karras"), Cell("digits", "edm", "karras"),
         Cell("mixture", "eps", "normal"), Cell("mixture", "eps", "simple"), Cell("mixture", "eps", "sgm_uniform"),
         Cell("mixture", "eps", "exponential"), Cell("mixture", "flow1", "normal"), Cell("mixture", "flow6", "beta"),
         Cell("digits", "flow3", "simple"))
SAMPLERS = ("evodiff", "evodiff:improved@shift=0", "evodiff:reference", "euler", "dpmpp_2m", "deis", "ipndm",
            "uni_pc", "res_multistep", "gradient_estimation")
NFES = (5, 6, 8, 10, 15, 20, 30)
N_SAMPLES = 384


def main() -> int:
    torch.set_num_threads(1)
    start = time.perf_counter()
    records = stress.run(CELLS, SAMPLERS, NFES, (quality.HELDOUT_SEED,), N_SAMPLES, 100, None)
    refs = stress.references_summary()
    seconds = time.perf_counter() - start
    settings = (f"{len(CELLS)} cells, NFE {list(NFES)}, {N_SAMPLES} samples per cell (held-out seed "
                f"{quality.HELDOUT_SEED}), exact ODE: RK4 with 100 steps in log sigma")
    header = report.header("python -m bench.stress_heldout", seconds, settings, report.core_digest())
    text = stress.markdown(records, refs, header, "EVODiff stress matrix (held-out seed)")
    (ROOT / "docs" / "stress.md").write_text(text)
    out = ROOT / "bench_out" / "stress" / "heldout"
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(stress._jsonable(dict(records=records, references=refs)), indent=1))
    print(stress.summary_text(stress.summary(records), records, refs))
    print(f"[stress] {seconds:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
