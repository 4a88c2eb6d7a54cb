"""Public helpers of every benchmark module: paths, names, quiet loggers, fmt, md_table, strict JSON, run header."""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import json
import logging
import math
import os
import platform
import re
import shlex
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
OUT = ROOT / "bench_out"
EVODIFF_PREFIX = "evodiff"
_FLOW_SHIFT = re.compile(r"flow(\d+(?:\.\d+)?)")
# loggers whose few-step warnings are the point of the benchmark, not news (core and the loaded pack)
CHATTY = ("evodiff_core", "evodiff_bench_pack")


def is_flow(family: str) -> bool:
    """Flow families use x = (1 - sigma) x0 + sigma eps; the others x = x0 + sigma eps."""
    return family == "flow" or _FLOW_SHIFT.fullmatch(family) is not None


def core_noise_schedule(family: str) -> str:
    """The core's noise_schedule for a family, "flow" or "ve": what the pack's KSampler detects."""
    return "flow" if is_flow(family) else "ve"


def flow_shift(family: str) -> float | None:
    """The shift of a re-shifted flow family ('flow6' -> 6.0); None for the others."""
    match = _FLOW_SHIFT.fullmatch(family)
    return float(match.group(1)) if match else None


def is_evodiff(sampler: str) -> bool:
    """'evodiff', 'evodiff:<variant>[@shift=x]', 'evodiff@shift=x', 'evodiff@<rev>', 'evodiff~<rule>'."""
    return sampler == EVODIFF_PREFIX or sampler.startswith(tuple(EVODIFF_PREFIX + c for c in ":@~"))


@contextlib.contextmanager
def quiet(loggers=CHATTY):
    """Silence the solver's warnings and ComfyUI's dpm_fast tensor-copy warning for the block."""
    saved = {name: logging.getLogger(name).level for name in loggers}
    for name in loggers:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "To copy construct from a tensor")
            yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def silent(*_) -> None:
    """A progress callback that shows nothing."""


def fmt(value, digits=3) -> str:
    """A table entry: 3 significant digits, small values in exponent form, '–' for None."""
    if value is None:
        return "–"
    if isinstance(value, int):
        return str(value)
    if value != value:
        return "nan"
    return f"{value:.{digits}g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.1e}"


ALIGN = {"l": "---", "r": "---:", "c": ":---:"}


def md_table(head, rows, align: str) -> str:
    """A markdown table of lists of cells; ``align``: a letter (l, r or c) per column."""
    line = lambda cells: "| " + " | ".join(str(c) for c in cells) + " |"   # noqa: E731
    return "\n".join([line(head), "|" + "|".join(ALIGN[a] for a in align) + "|"] + [line(r) for r in rows])


def jsonable(value):
    """results.json is strict JSON: non-finite floats become null (records keep `finite`); dataclasses
    become their fields."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def write_json(path: Path, value) -> None:
    """The one place results are serialised."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(jsonable(value), indent=1, default=str))


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def shown(path: Path) -> str:
    """Relative to the repository when inside it."""
    return str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


def machine() -> str:
    """The header's machine line: CPU, cores, threads, and the torch, ComfyUI and Python versions."""
    import torch
    from tools.comfyui_runtime import find_comfyui_dir

    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")),
               platform.processor() or platform.machine())
    version_file = find_comfyui_dir() / "comfyui_version.py"
    version = version_file.read_text().split("=")[-1].strip().strip("\"'") if version_file.exists() else "unknown"
    threads = os.environ.get("OMP_NUM_THREADS", "default")
    return (f"{cpu}, {os.cpu_count()} cores (OMP_NUM_THREADS={threads}), no GPU; "
            f"torch {torch.__version__}, ComfyUI {version}, Python {platform.python_version()}")


class Stamp:
    """What a report's header says of its run: the command line, the solver code measured, its duration."""

    def __init__(self, prog: str, argv=None):
        self.command = " ".join([prog, *map(shlex.quote, argv if argv is not None else sys.argv[1:])])
        # sha256 of evodiff_core/*.py when the run starts: which solver code was measured, committed or not
        code = b"".join(p.name.encode() + p.read_bytes() for p in sorted(ROOT.glob("evodiff_core/*.py")))
        self.digest = hashlib.sha256(code).hexdigest()[:12]
        self.start = time.perf_counter()

    def results(self, line: str, /, **fields) -> dict:
        """What every results.json starts with (command, header, seconds), then ``fields``; ``line``: the
        header's settings line."""
        seconds = time.perf_counter() - self.start
        date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        header = (f"Command: `{self.command}` — {date} — {seconds:.0f} s\n\n"
                  f"Machine: {machine()}\n\nSettings: {line}; evodiff_core/*.py sha256 {self.digest}\n")
        return dict(command=self.command, header=header, seconds=seconds, **fields)
