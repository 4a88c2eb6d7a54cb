"""Cost per step with the model excluded, and peak extra memory, against dpmpp_2m and uni_pc.

Time: each sampler runs the quality benchmark's KSAMPLER path with a trivial model (``0.5 * x``);
the time inside the model is subtracted, the rest per step is the sampler's overhead. The samplers
take turns within each repeat, so repeat i of a sampler and of dpmpp_2m form one paired ratio; the
verdict compares the spread of those ratios (their IQR), not one number, with the threshold (the
machine is shared: a single ratio moved from 1.08x to 0.60x between two identical quick runs).

Memory: in a child process with a fixed ``MALLOC_MMAP_THRESHOLD_`` every latent-sized buffer is its
own mmap, returned to the kernel when freed, so the resident set follows live tensor memory. The
peak-RSS counter (VmHWM) is reset through /proc/self/clear_refs just before a run; the peak above
the start, in latents, is the extra buffers the sampler (with KSAMPLER and the model's output) holds.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from . import comfy_samplers as cs
from .common import ROOT, md_table, silent

LATENTS = {"sd 1x4x128x128": (1, 4, 128, 128), "flux 1x16x128x128": (1, 16, 128, 128),
           "video 1x16x21x60x104": (1, 16, 21, 60, 104)}
BASELINES = ("dpmpp_2m", "uni_pc", "euler")   # euler: the floor any sampler pays here
THRESHOLD = 1.5     # EVODiff's overhead per step at most 1.5x dpmpp_2m's (judged by the paired IQR)
MEMORY_MARGIN = 1.0  # and its peak memory at most dpmpp_2m's plus one latent
STEPS = 10


class TimedTrivialModel:
    seconds = 0.0

    def __call__(self, x, sigma):
        start = time.perf_counter()
        out = 0.5 * x     # one fresh latent-sized output, like a real model's
        self.seconds += time.perf_counter() - start
        return out


def _noise(shape):
    return torch.randn(shape, generator=torch.Generator().manual_seed(0))


def _run(sampler: str, noise: torch.Tensor, steps: int = STEPS):
    model = TimedTrivialModel()
    start = time.perf_counter()
    # a callback, as KSampler always passes one (its progress bar and preview)
    run = cs.run_sampler(sampler, "eps", "karras", steps, model, noise, exact_float64=False, callback=silent)
    return time.perf_counter() - start - model.seconds, run


def overhead_per_step(samplers, shape, repeats: int = 3) -> dict[str, list[float]]:
    """{sampler: [seconds per step outside the model, per repeat]}, the samplers taking turns."""
    noise = _noise(shape)
    times = {s: [] for s in samplers}
    for s in samplers:
        _run(s, noise)  # warm-up
    # small latents run in a millisecond: repeat them more, so the median is as reliable
    for _ in range(repeats * max(1, 2_000_000 // noise.numel())):
        for s in samplers:
            times[s].append(_run(s, noise)[0] / STEPS)
    return times


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_extra_buffers(fn, latent: torch.Tensor) -> float:
    """Peak resident memory while ``fn(latent)`` runs, above the start, in buffers of latent's size
    (meaningful only in a process started with MEMORY_ENV)."""
    Path("/proc/self/clear_refs").write_text("5")   # VmHWM := current RSS
    before = _rss_kib("VmRSS")
    fn(latent)
    return (_rss_kib("VmHWM") - before) * 1024 / (latent.numel() * latent.element_size())


def sampler_buffers(sampler: str, shape) -> float:
    """Extra latent-sized buffers of a whole KSAMPLER run (with what every sampler pays here)."""
    noise = _noise(shape)
    _run(sampler, noise)  # warm-up: one-time allocations (ComfyUI tables, caches)
    return peak_extra_buffers(lambda x: _run(sampler, x), noise)


MEMORY_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TOP_PAD_": "0", "OMP_NUM_THREADS": "1"}


def measure_memory(samplers, shapes) -> dict:
    """{sampler: {latent: buffers}}, measured in a child with a fixed mmap threshold."""
    out = subprocess.run([sys.executable, "-m", "bench.cost", "--memory-worker", json.dumps([samplers, shapes])],
                         env=dict(os.environ, **MEMORY_ENV), cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def quartiles(values) -> tuple[float, float, float]:
    """(first quartile, median, third quartile); below 4 values the whole range (min, median, max)."""
    if len(values) < 4:
        return min(values), statistics.median(values), max(values)
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, median, q3


def time_verdict(ratio_q1: float, ratio_q3: float, threshold: float = THRESHOLD) -> str:
    """'below' / 'above' when the ratio's whole IQR is on one side of the threshold, else 'within noise'."""
    return "below" if ratio_q3 <= threshold else "above" if ratio_q1 > threshold else "within noise"


def run_cost(samplers=None, shapes=tuple(LATENTS), repeats: int = 3, memory: bool = True) -> list[dict]:
    """One record per (sampler, latent): overhead per step, the paired ratio to dpmpp_2m, peak extra
    buffers, and for EVODiff the verdicts (``verdict`` PASS / FAIL is kept for old readers)."""
    samplers = tuple(samplers) if samplers is not None else cs.evodiff_variants() + BASELINES
    buffers = measure_memory(list(samplers), list(shapes)) if memory else {}
    records = []
    for name in shapes:
        times = overhead_per_step(tuple(dict.fromkeys(samplers + ("dpmpp_2m",))), LATENTS[name], repeats)
        base_buffers = buffers.get("dpmpp_2m", {}).get(name)
        for s in samplers:
            paired = [t / b for t, b in zip(times[s], times["dpmpp_2m"])]
            ratio_q1, ratio, ratio_q3 = quartiles(paired)
            extra = buffers.get(s, {}).get(name)
            memory_ok = extra is None or base_buffers is None or extra <= base_buffers + MEMORY_MARGIN + 0.25
            record = dict(sampler=s, latent=name, ms_per_step=1e3 * statistics.median(times[s]),
                          ms_min=1e3 * min(times[s]), ms_max=1e3 * max(times[s]), repeats=len(times[s]),
                          ratio_to_dpmpp_2m=ratio, ratio_q1=ratio_q1, ratio_q3=ratio_q3,
                          extra_buffers=extra, time_verdict="", memory_ok=memory_ok, verdict="")
            if cs.is_evodiff(s):
                record["time_verdict"] = time_verdict(ratio_q1, ratio_q3)
                record["verdict"] = "FAIL" if record["time_verdict"] == "above" or not memory_ok else "PASS"
            records.append(record)
    return records


def verdict_text(record: dict) -> str:
    """The time verdict and the memory margin in words."""
    if not cs.is_evodiff(record["sampler"]):
        return ""
    time = {"below": f"below {THRESHOLD:g}×", "above": f"above {THRESHOLD:g}×",
            "within noise": f"within noise of {THRESHOLD:g}×"}[record["time_verdict"]]
    return time + ("" if record["memory_ok"] else f"; memory over dpmpp_2m + {MEMORY_MARGIN:g}")


def ratio_text(record: dict) -> str:
    """'1.61 (IQR 1.42–1.80)' ('range' below 4 repeats)."""
    spread = "IQR" if record["repeats"] >= 4 else "range"
    return f"{record['ratio_to_dpmpp_2m']:.2f} ({spread} {record['ratio_q1']:.2f}–{record['ratio_q3']:.2f})"


def cost_table(records) -> str:
    head = ["sampler", "latent", "overhead ms/step, median (min–max, repeats)",
            "× dpmpp_2m, median of paired repeats (spread)", "peak extra buffers",
            f"time vs {THRESHOLD:g}×, memory vs dpmpp_2m + {MEMORY_MARGIN:g}"]
    return md_table(head, [[r["sampler"], r["latent"],
                            f"{r['ms_per_step']:.2f} ({r['ms_min']:.2f}–{r['ms_max']:.2f}, {r['repeats']})",
                            ratio_text(r), "–" if r["extra_buffers"] is None else f"{r['extra_buffers']:.1f}",
                            verdict_text(r)] for r in records], "llrrrl")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--memory-worker")
    args = parser.parse_args()
    if args.memory_worker:
        torch.set_num_threads(1)
        samplers, shapes = json.loads(args.memory_worker)
        print(json.dumps({s: {name: sampler_buffers(s, LATENTS[name]) for name in shapes} for s in samplers}))
