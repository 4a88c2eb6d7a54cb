"""EVODiff cores other than today's default, as benchmark samplers: 'evodiff@<rev>' and 'evodiff~<rule>'.

'evodiff@<rev>' (e.g. evodiff@cd34a6a): the core of an earlier commit, so a change of the solver is
judged against the defaults it replaces in the same run. It is read with `git show` (never from a
working tree), written under bench_out/cores/<rev>/ and imported as its own package; it runs with its
own defaults and the noise schedule the pack's KSampler would detect.

'evodiff~<rule>': the current core with one rule switched off by setting that rule's own constant for
the sampler call (the core is not edited; docs/variants.md §7, `python -m bench.ablation`):

  evodiff~no-gate          shift μ = 0: trust ν = c, the slopes' disagreement is ignored (V6)
  evodiff~no-conditioning  (V6') off: c = 1 whatever the ratio q of consecutive steps
  evodiff~no-probe-ending  (V10) off: the last step is (V9) and the final call denoises x_N
  evodiff~full-first-probe the first order-2 probe extrapolates with trust 1, not at the Euler point
  evodiff~no-final-extrapolation  (V11) off: a list ending in 0 returns its final call's D_N
  evodiff~no-warmup-corrector     (V12) off: the Euler warm-up is carried on uncorrected
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import math
import subprocess
import sys
from functools import lru_cache
from pathlib import Path
from unittest.mock import patch

import torch

from evodiff_core import improved, sample_evodiff

from .common import EVODIFF_PREFIX as PREFIX
from .common import ROOT

RULE_SEPARATOR = "~"
CORE = "evodiff_core"
SEPARATOR = "@"


def split_name(sampler: str) -> tuple[str, str | None]:
    """('evodiff', 'cd34a6a') for 'evodiff@cd34a6a'; (sampler, None) for every other name.
    'evodiff:<variant>@shift=x' (an option, not a revision) is not a revision name."""
    name, sep, rev = sampler.partition(SEPARATOR)
    if name != PREFIX or not sep or "=" in rev:
        return sampler, None
    return name, rev


@lru_cache(maxsize=None)
def core_at(rev: str):
    """The evodiff_core package as committed at ``rev``, imported as ``evodiff_core_<rev>``."""
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short=7", f"{rev}^{{commit}}"],
                            check=True, capture_output=True, text=True).stdout.strip()
    package = f"{CORE}_{commit}"
    target = ROOT / "bench_out" / "cores" / commit / package
    files = subprocess.run(["git", "-C", str(ROOT), "ls-tree", "--name-only", commit, f"{CORE}/"],
                           check=True, capture_output=True, text=True).stdout.split()
    target.mkdir(parents=True, exist_ok=True)
    for path in files:
        source = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:{path}"],
                                check=True, capture_output=True).stdout
        (target / Path(path).name).write_bytes(source)
    if str(target.parent) not in sys.path:
        sys.path.insert(0, str(target.parent))
    return importlib.import_module(package)


def _first_probe_with_full_trust():
    """Steps start with ν = 1 (a scalar tensor) instead of None, so the first probe is x_E + a1·g−."""
    init = improved.Steps.__init__

    def starting_trusted(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.trust = torch.ones(())

    return patch.object(improved.Steps, "__init__", starting_trusted)


def _without_warmup_corrector():
    """order2_step handed weights whose (V12) weight is 0."""
    step = improved.order2_step

    def euler_warmup(x, denoised_prev, change_prev, weights, *args, **kwargs):
        return step(x, denoised_prev, change_prev, dataclasses.replace(weights, warmup=0.0), *args, **kwargs)

    return patch.object(improved, "order2_step", euler_warmup)


RULES = {
    "no-gate": lambda: contextlib.nullcontext(),   # shift 0, passed as an option
    "no-conditioning": lambda: patch.object(improved, "SLOPE_BASELINE_RATIO", math.inf),
    "no-probe-ending": lambda: patch.object(improved, "PROBE_ENDING_MIN_LOG_SNR_STEP", math.inf),
    "full-first-probe": _first_probe_with_full_trust,
    "no-final-extrapolation": lambda: patch.object(improved.Steps, "final_denoised", lambda self, denoised: denoised),
    "no-warmup-corrector": _without_warmup_corrector,
}
SAMPLERS = tuple(f"{PREFIX}{RULE_SEPARATOR}{rule}" for rule in RULES)


def rule_of(sampler: str) -> str | None:
    name, sep, rule = sampler.partition(RULE_SEPARATOR)
    return rule if name == PREFIX and sep and rule in RULES else None


def sampler_function(rule: str):
    """sample_evodiff with ``rule`` off for the call (ComfyUI's sampler signature)."""
    def ablated(model, x, sigmas, **options):
        if rule == "no-gate":
            options["shift"] = 0.0
        with RULES[rule]():
            return sample_evodiff(model, x, sigmas, **options)
    return ablated
