"""EVODiff cores of earlier commits, as benchmark samplers: 'evodiff@<rev>' (e.g. evodiff@cd34a6a).

A change of the solver is judged against the defaults it replaces, in the same run, on every cell.
The core of commit <rev> is read with `git show` (never from a working tree), written under
bench_out/cores/<rev>/ and imported as its own package, so any number of cores sit side by side.
It runs with its own defaults, with the noise schedule the pack's KSampler would detect.
"""
from __future__ import annotations

import importlib
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORE = "evodiff_core"
SEPARATOR = "@"


def split_name(sampler: str) -> tuple[str, str | None]:
    """('evodiff', 'cd34a6a') for 'evodiff@cd34a6a'; (sampler, None) for every other name.
    'evodiff:<variant>@shift=x' (an option, not a revision) is not a revision name."""
    name, sep, rev = sampler.partition(SEPARATOR)
    if name != "evodiff" or not sep or "=" in rev:
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
