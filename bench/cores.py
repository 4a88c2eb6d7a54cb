"""EVODiff cores other than today's default, as benchmark samplers: 'evodiff@<rev>' and 'evodiff~<rule>'.

'evodiff@<rev>' (e.g. evodiff@cd34a6a): the core of an earlier commit, read with `git show` (never
from a working tree) into bench_out/cores/<rev>/ and imported as its own package, so a change of the
solver is judged against the defaults it replaces in the same run.

'evodiff~<rule>': the current core with one rule of RULES off for the sampler call, by patching that
rule's own constant (the core is not edited; docs/variants.md §7, `python -m bench.ablation`).
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

from .common import EVODIFF_PREFIX as PREFIX, ROOT

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
    def git(*args) -> bytes:
        return subprocess.run(["git", "-C", str(ROOT), *args], check=True, capture_output=True).stdout

    commit = git("rev-parse", "--short=7", f"{rev}^{{commit}}").decode().strip()
    package = f"{CORE}_{commit}"
    target = ROOT / "bench_out" / "cores" / commit / package
    target.mkdir(parents=True, exist_ok=True)
    for path in git("ls-tree", "--name-only", commit, f"{CORE}/").decode().split():
        (target / Path(path).name).write_bytes(git("show", f"{commit}:{path}"))
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
    # shift μ = 0, passed as an option: trust ν = c, the slopes' disagreement is ignored (V6)
    "no-gate": lambda: contextlib.nullcontext(),
    # (V6') off: c = 1 whatever the ratio q of consecutive steps
    "no-conditioning": lambda: patch.object(improved, "SLOPE_BASELINE_RATIO", math.inf),
    # (V10) off: the last step is (V9) and the final call denoises x_N
    "no-probe-ending": lambda: patch.object(improved, "PROBE_ENDING_MIN_LOG_SNR_STEP", math.inf),
    # the first order-2 probe extrapolates with trust 1, not at the Euler point
    "full-first-probe": _first_probe_with_full_trust,
    # (V11) off: a list ending in 0 returns its final call's D_N
    "no-final-extrapolation": lambda: patch.object(improved.Steps, "final_denoised", lambda self, d: d),
    # (V12) off: the Euler warm-up is carried on uncorrected
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
