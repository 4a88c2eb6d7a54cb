"""Stress matrix: where each sampler diverges, over guidance scales and ComfyUI schedules.

Users run guided models at few steps over many schedules; bench.quality covers three unguided
schedules. Here a cell is problem x guidance scale x model sampling / scheduler, and every
sampler is scored per NFE by the Fréchet distance (FD) between its samples and the exact
(guided) ODE solution's samples from the same noise, in the problem's feature space (raw for
the mixture, the FeatureNet's for digits), plus the RMS error against that solution.

Verdicts (written into each record and summarised in the report):
* diverged: the sampler's FD exceeds Euler's in the same cell at the same NFE (a non-finite or
  failed run has always diverged);
* for EVODiff against dpmpp_2m: won / tie / lost, where a tie is |FD difference| <=
  report.NOISE_FACTOR x the combined split-half noise sqrt(noise_a^2 + noise_b^2);
* best of all: its FD is the lowest of every sampler run there.

    python -m bench.stress [--full] [--heldout] [--seed N] [--samplers a,b] [--out DIR]

Quick (the default): 6 representative cells, NFE 5/8/10, 384 samples, about 45 s on 2 idle
cores. --full: all 72 cells, NFE 4..30, 1024 samples, about 80 min on 2 idle cores (the analytic
mixture's exact denoiser dominates). Both write report.md and results.json.

    from bench import stress
    records = stress.run(stress.QUICK_CELLS, ["evodiff", "euler", "dpmpp_2m"], (5, 8), (0,), 256)
"""
from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
import warnings
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from . import comfy_samplers as cs
from . import quality, report
from .metrics import FrechetTarget, changed_component, frechet_distance, moments, rms_error, split_half_noise
from .problems import exact_solution, labels_for, noise_for, problem

ROOT = Path(__file__).resolve().parent.parent
BASELINE = "euler"          # a sampler worse than this one at the same NFE has diverged
RIVAL = report.RIVAL        # what EVODiff is judged against
BEST_NFES = (5, 10)         # the "best of all" share is taken over NFEs in this range

NFES_FULL = (4, 5, 6, 8, 10, 12, 15, 20, 25, 30)
NFES_QUICK = (5, 8, 10)
QUICK = dict(nfes=NFES_QUICK, n_samples=384, ode_steps=100)
FULL = dict(nfes=NFES_FULL, n_samples=1024, ode_steps=200)

# the schedule axis: (family, scheduler); families are bench.comfy_samplers.FAMILIES keys
SCHEDULES = (tuple(("eps", s) for s in ("karras", "normal", "simple", "sgm_uniform", "exponential"))
             + (("edm", "karras"), ("edm", "exponential"))
             + tuple((f"flow{shift}", s) for shift in (1, 3, 6) for s in ("simple", "beta", "normal")))
GUIDED_SCHEDULES = (("eps", "karras"), ("eps", "normal"), ("edm", "karras"), ("flow3", "simple"))
MIXTURE_CFGS = (1, 2, 4, 7)
DIGITS_CFGS = (1, 3, 5)
GUIDED = ("mixture-cfg", "digits-cfg", "mixture-b-cfg", "digits-b-cfg")


def schedule_name(family: str, scheduler: str) -> str:
    label = {"eps": "SD1.5", "edm": "EDM", "flow": "flow s3"}.get(family)
    if label is None and cs.is_flow(family):
        label = f"flow s{family[4:]}"
    return f"{label or family} {scheduler}"


@dataclass(frozen=True)
class Cell:
    """A problem under a guidance scale (guided problems only) and a ComfyUI model + scheduler."""
    problem: str        # "mixture" | "mixture-cfg" | "digits" | "digits-cfg"
    family: str         # a bench.comfy_samplers.FAMILIES key: "eps", "edm", "flow1", "flow3", ...
    scheduler: str      # a comfy.samplers scheduler name
    cfg: float | None = None

    def __post_init__(self):
        if (self.cfg is not None) != (self.problem in GUIDED):
            raise ValueError(f"{self.problem}: a guidance scale is needed exactly for {GUIDED}")

    @property
    def name(self) -> str:
        guidance = f" w={self.cfg:g}" if self.cfg is not None else ""
        return f"{self.problem}{guidance}, {schedule_name(self.family, self.scheduler)}"


def full_cells() -> tuple[Cell, ...]:
    """Every schedule x {mixture, mixture-cfg w=4, digits}, then the guidance axes on four schedules."""
    every = [Cell("mixture", f, s) for f, s in SCHEDULES]
    every += [Cell("mixture-cfg", f, s, 4.0) for f, s in SCHEDULES]
    every += [Cell("digits", f, s) for f, s in SCHEDULES]
    for f, s in GUIDED_SCHEDULES:
        every += [Cell("mixture-cfg", f, s, float(w)) for w in MIXTURE_CFGS]
        every += [Cell("digits-cfg", f, s, float(w)) for w in DIGITS_CFGS]
    return tuple(dict.fromkeys(every))          # w=4 on the guided schedules is listed twice


# a representative few: strong guidance, the EDM and flow models, the learned guided model
QUICK_CELLS = (Cell("mixture-cfg", "eps", "karras", 4.0), Cell("mixture-cfg", "eps", "karras", 7.0),
               Cell("mixture", "edm", "karras"), Cell("mixture-cfg", "flow3", "simple", 4.0),
               Cell("digits-cfg", "eps", "karras", 3.0), Cell("mixture", "eps", "normal"))


def default_samplers() -> tuple[str, ...]:
    """The pack's KSampler 'evodiff', then every deterministic ComfyUI sampler available."""
    return (cs.EVODIFF_PREFIX,) + cs.BUILTIN_SAMPLERS + cs.extra_deterministic_samplers()


@dataclass
class Reference:
    noise: torch.Tensor             # unit Gaussian, float64, one block per seed
    labels: torch.Tensor | None     # class labels of a guided problem, aligned with noise
    x: torch.Tensor                 # the exact ODE solution from that noise
    sigma_start: float
    features: torch.Tensor
    target: FrechetTarget           # the exact samples' feature moments
    components: torch.Tensor | None
    refinement_rms: float           # RMS change when the RK4 steps double (first 128 samples)
    seconds: float


_references: dict = {}


def denoiser(cell: Cell, labels: torch.Tensor | None):
    """The cell's data prediction in its family's convention; guided: D_u + cfg (D_c - D_u)."""
    prob = problem(cell.problem)
    if cell.cfg is None:
        return prob.denoiser(cell.family)
    return prob.guided_denoiser(cell.family, labels, cell.cfg)


def reference(cell: Cell, seeds: tuple[int, ...], n_per_seed: int, ode_steps: int) -> Reference:
    """The exact solution of the cell's (guided) probability-flow ODE; cached per process."""
    key = (cell, seeds, n_per_seed, ode_steps)
    if key not in _references:
        start = time.perf_counter()
        prob = problem(cell.problem)
        noise = noise_for(prob, seeds, n_per_seed)
        labels = labels_for(prob, seeds, n_per_seed) if cell.cfg is not None else None
        x, sigma_start = exact(cell, noise, labels, ode_steps)
        few = slice(0, min(128, len(x)))
        feats = prob.features(x)
        finer, _ = exact(cell, noise[few], None if labels is None else labels[few], 2 * ode_steps)
        _references[key] = Reference(
            noise=noise, labels=labels, x=x, sigma_start=sigma_start, features=feats,
            target=FrechetTarget(*moments(feats)), components=prob.components(x),
            refinement_rms=rms_error(x[few], finer), seconds=time.perf_counter() - start)
    return _references[key]


def exact(cell: Cell, noise: torch.Tensor, labels: torch.Tensor | None, ode_steps: int) -> tuple[torch.Tensor, float]:
    """(x(0), start sigma): the cell's (guided) probability-flow ODE solved with RK4 from the latent
    KSAMPLER makes of ``noise``; row b is conditioned on labels[b]."""
    sigmas = cs.sigmas_for(BASELINE, cell.family, cell.scheduler, 10)
    x_start = cs.initial_latent(cell.family, sigmas, noise)
    x = exact_solution(problem(cell.problem), cell.family, x_start, float(sigmas[0]), ode_steps,
                       denoiser(cell, labels))
    return x, float(sigmas[0])


def references_summary() -> list[dict]:
    """The convergence check of every exact solution computed so far in this process."""
    return [dict(cell=k[0].name, n=len(r.x), ode_steps=k[3], refinement_rms=r.refinement_rms,
                 seconds=r.seconds) for k, r in _references.items()]


def _fd(features: torch.Tensor, reference_features: torch.Tensor) -> float:
    return frechet_distance(*moments(features), *moments(reference_features))


def score(cell: Cell, sampler: str, nfe: int, ref: Reference) -> dict:
    """One sampler at one NFE on one cell, run as KSampler runs it; one record."""
    prob = problem(cell.problem)
    steps, achieved = cs.steps_for_nfe(sampler, cell.family, cell.scheduler, nfe)
    record = dict(sampler=sampler, cell=cell.name, nfe_target=nfe, nfe=achieved, steps=steps,
                  n_samples=len(ref.noise), finite=False, error=None, fd=math.inf, fd_noise=math.nan,
                  rms=math.inf, rms_noise=math.nan, changed=None, **asdict(cell))
    start = time.perf_counter()
    try:
        run = cs.run_sampler(sampler, cell.family, cell.scheduler, steps, denoiser(cell, ref.labels), ref.noise)
    except Exception as error:  # noqa: BLE001 - a sampler that breaks down has diverged; say why
        return dict(record, error=f"{type(error).__name__}: {error}"[:300], seconds=time.perf_counter() - start)
    if run.nfe != achieved or float(run.sigmas[0]) != ref.sigma_start:
        raise AssertionError(f"{sampler}: NFE {run.nfe} (probed {achieved}) or start sigma "
                             f"{float(run.sigmas[0])} (exact solution's {ref.sigma_start}) differ")
    record.update(nfe=run.nfe, seconds=time.perf_counter() - start, finite=bool(torch.isfinite(run.x).all()))
    if record["finite"]:
        feats = prob.features(run.x)
        record.update(fd=ref.target(feats), fd_noise=split_half_noise(_fd, feats, ref.features),
                      rms=rms_error(run.x, ref.x), rms_noise=split_half_noise(rms_error, run.x, ref.x))
        if ref.components is not None:
            record["changed"] = changed_component(prob.components(run.x), ref.components)
    return record


def run(cells=QUICK_CELLS, samplers=None, nfes=NFES_QUICK, seeds=(0,), n_samples: int = QUICK["n_samples"],
        ode_steps: int = QUICK["ode_steps"], progress=None) -> list[dict]:
    """Every sampler at every NFE on every cell; one record (a dict) per combination.

    ``samplers``: default ``default_samplers()``; 'evodiff' is the pack's KSampler sampler,
    'evodiff:<variant>[@shift=x]' the core's variants. ``seeds``: noise seeds, ``n_samples``
    each. Record keys: sampler, cell (its name) and the cell's fields (problem, family,
    scheduler, cfg), nfe_target, nfe (measured), steps, fd (to the exact solution's samples),
    rms, their split-half noise fd_noise / rms_noise, changed (mixture component changes),
    finite, error (a sampler's exception, else None), seconds, and the verdicts: diverged
    (None without an Euler run), and for EVODiff samplers vs_rival and best_of_all.
    """
    samplers = tuple(samplers) if samplers is not None else default_samplers()
    seeds = tuple(seeds)
    for name in dict.fromkeys(c.problem for c in cells):
        problem(name)           # a missing model (digits-cfg's weights) fails here, before any work
    records = []
    # their few-step warnings are the point of the benchmark, not news (core and the loaded pack)
    with quality._quiet("evodiff_core"), quality._quiet("evodiff_bench_pack"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "To copy construct from a tensor")   # ComfyUI's dpm_fast
        for cell in cells:
            ref = reference(cell, seeds, n_samples, ode_steps)
            cell_records = []
            for sampler in samplers:
                for nfe in nfes:
                    cell_records.append(score(cell, sampler, nfe, ref))
                    if progress:
                        progress(cell_records[-1])
            records += judge(cell_records)
    return records


def _good(record) -> bool:
    return record["finite"] and record["error"] is None


def is_diverged(record: dict, baseline: dict) -> bool:
    """FD above the baseline's at the same point; a failed or non-finite run always diverged."""
    if not _good(record):
        return True
    return _good(baseline) and record["fd"] > baseline["fd"]


def verdict(record: dict, rival: dict) -> str:
    """'won', 'tie' or 'lost' by FD (report.compare's rule); a failed run loses to a good one."""
    if not (_good(record) and _good(rival)):
        return "tie" if _good(record) == _good(rival) else ("won" if _good(record) else "lost")
    return {"better": "won", "worse": "lost", "tie": "tie"}[report.compare(record, rival, "fd")]


def judge(records: list[dict], baseline: str = BASELINE, rival: str = RIVAL) -> list[dict]:
    """Add the verdicts to records (in place, also returned): diverged, vs_rival, best_of_all."""
    points: dict = {}
    for r in records:
        points.setdefault((r["cell"], r["nfe_target"]), {})[r["sampler"]] = r
    for group in points.values():
        finite_fds = [o["fd"] for o in group.values() if _good(o)]
        for name, r in group.items():
            r["diverged"] = is_diverged(r, group[baseline]) if baseline in group else None
            if cs.is_evodiff(name):
                r["vs_rival"] = verdict(r, group[rival]) if rival in group else None
                r["best_of_all"] = _good(r) and r["fd"] <= min(finite_fds)
    return records


def summary(records: list[dict], sampler: str = cs.EVODIFF_PREFIX, best_nfes=BEST_NFES) -> dict:
    """The counts the report leads with (records must have been through judge())."""
    mine = [r for r in records if r["sampler"] == sampler]
    in_range = [r for r in mine if best_nfes[0] <= r["nfe_target"] <= best_nfes[1]]
    diverged = {}
    for s in dict.fromkeys(r["sampler"] for r in records):
        rs = [r for r in records if r["sampler"] == s and r["diverged"] is not None]
        diverged[s] = dict(points=sum(r["diverged"] for r in rs), of=len(rs),
                           cells=len({r["cell"] for r in rs if r["diverged"]}),
                           of_cells=len({r["cell"] for r in rs}))
    return dict(sampler=sampler, rival=RIVAL, vs_rival=dict(Counter(r.get("vs_rival") for r in mine if r.get("vs_rival"))),
                best_of_all=sum(bool(r.get("best_of_all")) for r in in_range), best_of_all_of=len(in_range),
                best_nfes=list(best_nfes), diverged=diverged,
                failed=[(r["sampler"], r["cell"], r["nfe_target"], r["error"] or "non-finite output")
                        for r in records if not _good(r)])


def _listed(items: list[str], most: int = 12) -> str:
    shown = "; ".join(items[:most])
    return shown + (f"; and {len(items) - most} more" if len(items) > most else "") if items else "nowhere"


def summary_text(s: dict, records: list[dict], refs: list[dict]) -> str:
    """The summary in plain words, from summary()."""
    me, rival = s["sampler"], s["rival"]
    v = s["vs_rival"]
    lines = []
    if v:
        lost = [f"{r['cell']} @{r['nfe_target']}" for r in records if r["sampler"] == me and r.get("vs_rival") == "lost"]
        lines.append(f"- **{me} against {rival}**, by FD to the exact solution over {sum(v.values())} (cell, NFE) "
                     f"points: won {v.get('won', 0)}, tied {v.get('tie', 0)}, lost {v.get('lost', 0)}."
                     + (f" Lost at: {_listed(lost)}." if lost else ""))
    if s["best_of_all_of"]:
        lines.append(f"- **{me} is the best of all {len(s['diverged'])} samplers** at {s['best_of_all']} of "
                     f"{s['best_of_all_of']} points with NFE {s['best_nfes'][0]}–{s['best_nfes'][1]} "
                     f"({s['best_of_all'] / s['best_of_all_of']:.0%}).")
    if me in s["diverged"]:
        d = s["diverged"][me]
        mine = [f"{r['cell']} @{r['nfe_target']}" for r in records if r["sampler"] == me and r["diverged"]]
        lines.append(f"- **{me} diverged** (FD above {BASELINE}'s) at {d['points']} of {d['of']} points, in "
                     f"{d['cells']} of {d['of_cells']} cells: {_listed(mine)}.")
    others = {k: d for k, d in s["diverged"].items() if k not in (me, BASELINE) and d["of"]}
    if others:
        never = [k for k, d in others.items() if not d["points"]]
        worst = sorted(others, key=lambda k: -others[k]["points"])[:3]
        lines.append(f"- **Other samplers**: never diverged: {', '.join(never) or 'none'}; most often: "
                     + ", ".join(f"{k} ({others[k]['points']} of {others[k]['of']})" for k in worst) + ".")
    failed = [f"{a} on {c} @{n} ({e})" for a, c, n, e in s["failed"]]
    lines.append(f"- **Non-finite or failed runs**: {len(failed)}" + (f": {_listed(failed)}" if failed else "") + ".")
    if refs:
        worst_ref = max(refs, key=lambda r: r["refinement_rms"])
        lines.append(f"- **Exact solutions**: doubling the RK4 steps changes them by at most "
                     f"{worst_ref['refinement_rms']:.1e} RMS ({worst_ref['cell']}).")
    return "\n".join(lines)


def divergence_summary_table(s: dict) -> str:
    """Per sampler: diverged (cell, NFE) points and cells with any divergence, most diverged first."""
    lines = ["| sampler | diverged points | cells with a divergence |", "|---|---:|---:|"]
    for name, d in sorted(s["diverged"].items(), key=lambda kv: (-kv[1]["points"], kv[0])):
        lines.append(f"| {name} | {d['points']} of {d['of']} | {d['cells']} of {d['of_cells']} |")
    return "\n".join(lines)


def _groups(record: dict) -> tuple[str, ...]:
    model = "SD1.5" if record["family"] == "eps" else "EDM" if record["family"] == "edm" else "flow"
    return ("guided" if record["cfg"] is not None else "unguided", model, "all")


def group_table(records: list[dict], sampler: str = cs.EVODIFF_PREFIX) -> str:
    """The sampler's verdicts split by guided/unguided and model family."""
    mine = [r for r in records if r["sampler"] == sampler]
    lines = [f"| {sampler}: cells | points | won vs {RIVAL} | tie | lost | best of all (NFE {BEST_NFES[0]}–{BEST_NFES[1]}) "
             "| diverged |", "|---" + "|---:" * 6 + "|"]
    for group in ("unguided", "guided", "SD1.5", "EDM", "flow", "all"):
        rs = [r for r in mine if group in _groups(r)]
        if not rs:
            continue
        verdicts = Counter(r.get("vs_rival") for r in rs)
        in_range = [r for r in rs if BEST_NFES[0] <= r["nfe_target"] <= BEST_NFES[1]]
        lines.append(f"| {group} | {len(rs)} | {verdicts['won']} | {verdicts['tie']} | {verdicts['lost']} | "
                     f"{sum(bool(r.get('best_of_all')) for r in in_range)} of {len(in_range)} | "
                     f"{sum(bool(r['diverged']) for r in rs)} |")
    return "\n".join(lines)


def rules_text() -> str:
    return (f"Rules. Score: FD between a sampler's samples and the exact ODE solution's samples from the same "
            f"noise (raw 64 dims for the mixture, FeatureNet features for digits; guided cells against the exact "
            f"solution of the guided ODE D = D_u + w·(D_c − D_u)). *Diverged* (†): FD above {BASELINE}'s at the "
            f"same NFE, or a non-finite/failed run (✗). *{RIVAL} verdict*: a tie when |FD difference| ≤ "
            f"{report.NOISE_FACTOR:g} × sqrt(noise₁² + noise₂²) (split-half standard errors), otherwise won or lost. "
            f"*Best of all*: the lowest FD of every sampler at that point (no noise check). "
            f"`@n`: the NFE actually used when the target is not reachable (heun and friends).")


def _cell_text(r: dict | None, value: str, best) -> str:
    if r is None:
        return ""
    if not _good(r):
        return "✗ err" if r["error"] else "✗ non-finite"
    text = quality._fmt(r[value])
    if r[value] == best:
        text = f"**{text}**"
    if r.get("diverged"):
        text += " †"
    if r["nfe"] != r["nfe_target"]:
        text += f" @{r['nfe']}"
    return text


def cell_table(records: list[dict], cell: str, value: str = "fd") -> str:
    """Rows = samplers, columns = NFE; best per column bold, diverged †, failed ✗."""
    recs = [r for r in records if r["cell"] == cell]
    nfes = sorted({r["nfe_target"] for r in recs})
    at = {(r["sampler"], r["nfe_target"]): r for r in recs}
    best = {n: min((r[value] for r in recs if r["nfe_target"] == n and _good(r)), default=None) for n in nfes}
    lines = ["| sampler | " + " | ".join(f"NFE {n}" for n in nfes) + " |", "|---" + "|---:" * len(nfes) + "|"]
    for s in dict.fromkeys(r["sampler"] for r in recs):
        lines.append(f"| {s} | " + " | ".join(_cell_text(at.get((s, n)), value, best[n]) for n in nfes) + " |")
    return "\n".join(lines)


def verdict_line(records: list[dict], cell: str) -> str:
    """Per EVODiff sampler in the cell, in words: where it beat, tied and lost to the rival, and
    where its FD was the lowest of all."""
    out = []
    for s in dict.fromkeys(r["sampler"] for r in records if r["cell"] == cell and cs.is_evodiff(r["sampler"])):
        rs = sorted((r for r in records if r["cell"] == cell and r["sampler"] == s), key=lambda r: r["nfe_target"])
        measured = [r["nfe_target"] for r in rs if r.get("vs_rival")]
        at = lambda verdict: [r["nfe_target"] for r in rs if r.get("vs_rival") == verdict]  # noqa: E731
        parts = [f"{word} {report.nfe_words(at(verdict), measured)}" for verdict, word in
                 (("won", "better at"), ("lost", "worse at"), ("tie", "no difference beyond noise at")) if at(verdict)]
        best = [r["nfe_target"] for r in rs if r.get("best_of_all")]
        if best:
            parts.append(f"lowest FD of all samplers at {report.nfe_words(best, [r['nfe_target'] for r in rs])}")
        out.append(f"{s} against {RIVAL}: " + ("; ".join(parts) or "not compared") + ".")
    return "  \n".join(out)


def divergence_table(records: list[dict]) -> str:
    """Rows = samplers, columns = cells: at how many NFEs each sampler diverged there."""
    cells = list(dict.fromkeys(r["cell"] for r in records))
    count = Counter((r["sampler"], r["cell"]) for r in records if r["diverged"])
    n_nfes = len({r["nfe_target"] for r in records})
    lines = [f"| diverged at … of {n_nfes} NFEs | " + " | ".join(cells) + " |", "|---" + "|---:" * len(cells) + "|"]
    for s in dict.fromkeys(r["sampler"] for r in records):
        lines.append(f"| {s} | " + " | ".join(str(count[(s, c)] or "·") for c in cells) + " |")
    return "\n".join(lines)


def references_table(refs: list[dict]) -> str:
    lines = ["| cell | samples | RK4 steps | RMS change at 2× steps (128 samples) | seconds |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['cell']} | {r['n']} | {r['ode_steps']} | {r['refinement_rms']:.1e} | {r['seconds']:.1f} |"
              for r in refs]
    return "\n".join(lines)


def markdown(records: list[dict], refs: list[dict], header: str, title: str, before_cells: str = "") -> str:
    """The report; ``before_cells`` (markdown) goes just before "Divergence by cell"."""
    s = summary(records)
    parts = [f"# {title}\n", header, "## Summary\n", summary_text(s, records, refs) + "\n", rules_text() + "\n"]
    if any(r["sampler"] == s["sampler"] for r in records):
        parts.append(group_table(records, s["sampler"]) + "\n")
    parts += [divergence_summary_table(s) + "\n"] + ([before_cells] if before_cells else [])
    parts += ["## Divergence by cell\n", divergence_table(records) + "\n",
              "## Cells (FD to the exact solution)\n"]
    for cell in dict.fromkeys(r["cell"] for r in records):
        parts += [f"### {cell}\n", cell_table(records, cell) + "\n"]
        line = verdict_line(records, cell)
        if line:
            parts.append(line + "\n")
        parts += ["<details><summary>RMS error against the exact solution</summary>\n",
                  cell_table(records, cell, "rms") + "\n", "</details>\n"]
    parts += ["## Exact solutions (convergence check by refinement)\n", references_table(refs) + "\n"]
    return "\n".join(parts)


def jsonable(value):
    """results.json is strict JSON: non-finite floats become null (records keep `finite`)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stress", description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help=f"all {len(full_cells())} cells, NFE {list(NFES_FULL)}, "
                        f"{FULL['n_samples']} samples (default: the quick subset)")
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    seeds.add_argument("--heldout", action="store_true", help=f"use the held-out seed {quality.HELDOUT_SEED}")
    parser.add_argument("--samplers", help="comma-separated subset, e.g. evodiff,euler,dpmpp_2m")
    parser.add_argument("--out", type=Path, help="output folder (default bench_out/stress/, --full: bench_out/stress/full/)")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    out = args.out or ROOT / "bench_out" / "stress" / ("full" if args.full else "")
    settings = FULL if args.full else QUICK
    cells = full_cells() if args.full else QUICK_CELLS
    seed = quality.HELDOUT_SEED if args.heldout else args.seed
    samplers = tuple(args.samplers.split(",")) if args.samplers else default_samplers()
    command = "python -m bench.stress " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    digest = report.core_digest()

    def progress(r):
        shown = f"FD {r['fd']:.4g} ± {r['fd_noise']:.2g}  RMS {r['rms']:.4f}" if _good(r) else (r["error"] or "non-finite")
        print(f"  {r['cell']:<32} {r['sampler']:<20} NFE {r['nfe']:>2}  {shown}", flush=True)

    print(f"[stress] {len(samplers)} samplers × {len(cells)} cells × NFE {list(settings['nfes'])}, "
          f"{settings['n_samples']} samples, seed {seed}", flush=True)
    try:
        records = run(cells, samplers, settings["nfes"], (seed,), settings["n_samples"], settings["ode_steps"], progress)
    except FileNotFoundError as missing:
        print(f"[stress] cannot run: {missing}", file=sys.stderr)
        return 2
    refs = references_summary()
    seconds = time.perf_counter() - start
    settings_text = (f"{len(cells)} cells, NFE {list(settings['nfes'])}, {settings['n_samples']} samples per cell "
                     f"(seed {seed}), exact ODE: RK4 with {settings['ode_steps']} steps in log sigma")
    header = report.header(command, seconds, settings_text, digest)
    title = f"EVODiff stress matrix ({'full' if args.full else 'quick'})"
    (out / "report.md").write_text(markdown(records, refs, header, title))
    verdicts = summary(records)
    (out / "results.json").write_text(json.dumps(jsonable(dict(
        command=command, header=header, seconds=seconds, settings=settings, seed=seed,
        cells=[asdict(c) | {"name": c.name} for c in cells], references=refs, summary=verdicts,
        records=records)), indent=1))
    print("\n" + summary_text(verdicts, records, refs))
    print(f"\n[stress] wrote {out}/report.md and results.json in {seconds:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
