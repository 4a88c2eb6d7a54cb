"""The stress matrix's markdown (docs/stress.md, docs/stress-validation.md, bench_out/stress/): layout only.

Every verdict comes from bench.verdicts (the records went through verdicts.judge); this module lays
them out: the summary in words, the per-group and per-cell tables, the exact solutions' check.
"""
from __future__ import annotations

from collections import Counter

from .common import EVODIFF_PREFIX, is_evodiff, md_table
from .verdicts import BASELINE, BEST_NFES, RIVAL, Summary, outcome_words, pivot, rules_text, summarize


def _listed(items: list[str], most: int = 12) -> str:
    shown = "; ".join(items[:most])
    return shown + (f"; and {len(items) - most} more" if len(items) > most else "") if items else "nowhere"


def summary_text(s: Summary) -> str:
    """The summary in plain words, the list under "## Summary"."""
    me, rival, v, lost = s.sampler, s.rival, s.vs_rival, s.lost
    lines = []
    if v:
        lines.append(f"- **{me} against {rival}**, by FD to the exact solution over {sum(v.values())} (cell, NFE) "
                     f"points: won {v.get('won', 0)}, tied {v.get('tie', 0)}, lost {v.get('lost', 0)}."
                     + (f" Lost at: {_listed(lost)}." if lost else ""))
    if s.best_of_all_of:
        builtins = sum(not is_evodiff(name) for name in s.diverged)
        lines.append(f"- **{me} is the best of all {builtins} built-in samplers** at {s.best_of_all} of "
                     f"{s.best_of_all_of} points with NFE {s.best_nfes[0]}–{s.best_nfes[1]} "
                     f"({s.best_of_all / s.best_of_all_of:.0%}).")
    if me in s.diverged:
        d = s.diverged[me]
        lines.append(f"- **{me} diverged** (FD above {BASELINE}'s) at {d['points']} of {d['of']} points, in "
                     f"{d['cells']} of {d['of_cells']} cells: {_listed(s.diverged_at)}.")
    others = {k: d for k, d in s.diverged.items() if k not in (me, BASELINE) and d["of"]}
    if others:
        never = [k for k, d in others.items() if not d["points"]]
        worst = sorted(others, key=lambda k: -others[k]["points"])[:3]
        lines.append(f"- **Other samplers**: never diverged: {', '.join(never) or 'none'}; most often: "
                     + ", ".join(f"{k} ({others[k]['points']} of {others[k]['of']})" for k in worst) + ".")
    failed = [f"{a} on {c} @{n} ({e})" for a, c, n, e in s.failed]
    lines.append(f"- **Non-finite or failed runs**: {len(failed)}" + (f": {_listed(failed)}" if failed else "") + ".")
    worst_ref = s.worst_solution
    if worst_ref:
        lines.append(f"- **Exact solutions**: doubling the RK4 steps changes them by at most "
                     f"{worst_ref['refinement_rms']:.1e} RMS ({worst_ref['cell']}).")
    return "\n".join(lines)


def divergence_summary_table(s: Summary) -> str:
    """Per sampler: diverged (cell, NFE) points and cells with any divergence, most diverged first."""
    rows = [[name, f"{d['points']} of {d['of']}", f"{d['cells']} of {d['of_cells']}"]
            for name, d in sorted(s.diverged.items(), key=lambda kv: (-kv[1]["points"], kv[0]))]
    return md_table(["sampler", "diverged points", "cells with a divergence"], rows, "lrr")


def _groups(record: dict) -> tuple[str, ...]:
    model = "SD1.5" if record["family"] == "eps" else "EDM" if record["family"] == "edm" else "flow"
    return ("guided" if record["cfg"] is not None else "unguided", model, "all")


def group_table(records: list[dict], sampler: str = EVODIFF_PREFIX) -> str:
    """The sampler's verdicts split by guided/unguided and model family."""
    mine = [r for r in records if r["sampler"] == sampler]
    rows = []
    for group in ("unguided", "guided", "SD1.5", "EDM", "flow", "all"):
        rs = [r for r in mine if group in _groups(r)]
        verdicts = Counter(r.get("vs_rival") for r in rs)
        in_range = [r for r in rs if BEST_NFES[0] <= r["nfe_target"] <= BEST_NFES[1]]
        rows += [[group, len(rs), verdicts["won"], verdicts["tie"], verdicts["lost"],
                  f"{sum(bool(r.get('best_of_all')) for r in in_range)} of {len(in_range)}",
                  sum(bool(r["diverged"]) for r in rs)]] if rs else []
    return md_table([f"{sampler}: cells", "points", f"won vs {RIVAL}", "tie", "lost",
                     f"best of all (NFE {BEST_NFES[0]}–{BEST_NFES[1]})", "diverged"], rows, "l" + "r" * 6)


def cell_table(records: list[dict], cell: str, value: str = "fd") -> str:
    """Rows = samplers, columns = NFE."""
    recs = [r for r in records if r["cell"] == cell]
    return pivot(recs, value, "nfe_target", sorted({r["nfe_target"] for r in recs}), "NFE {}".format)


def verdict_line(records: list[dict], cell: str) -> str:
    """Per EVODiff sampler in the cell, in words: where it beat, tied and lost to the rival, and
    where its FD was the lowest of all."""
    out = []
    for s in dict.fromkeys(r["sampler"] for r in records if r["cell"] == cell and is_evodiff(r["sampler"])):
        rs = sorted((r for r in records if r["cell"] == cell and r["sampler"] == s), key=lambda r: r["nfe_target"])
        parts = outcome_words(rs)
        out.append(f"{s} against {RIVAL}: " + ("; ".join(parts) or "not compared") + ".")
    return "  \n".join(out)


def divergence_table(records: list[dict]) -> str:
    """Rows = samplers, columns = cells: at how many NFEs each sampler diverged there."""
    cells = list(dict.fromkeys(r["cell"] for r in records))
    count = Counter((r["sampler"], r["cell"]) for r in records if r["diverged"])
    rows = [[s] + [count[(s, c)] or "·" for c in cells] for s in dict.fromkeys(r["sampler"] for r in records)]
    return md_table([f"diverged at … of {len({r['nfe_target'] for r in records})} NFEs", *cells], rows,
                    "l" + "r" * len(cells))


def references_table(refs: list[dict]) -> str:
    return md_table(["cell", "samples", "RK4 steps", "RMS change at 2× steps (128 samples)", "seconds"],
                    [[r["cell"], r["n"], r["ode_steps"], f"{r['refinement_rms']:.1e}", f"{r['seconds']:.1f}"]
                     for r in refs], "lrrrr")


def markdown(records: list[dict], refs: list[dict], header: str, title: str, before_cells: str = "") -> str:
    """The report; ``before_cells`` (markdown) goes just before "Divergence by cell"."""
    s = summarize(records, refs)
    parts = [f"# {title}\n", header, "## Summary\n", summary_text(s) + "\n", rules_text() + "\n"]
    if any(r["sampler"] == s.sampler for r in records):
        parts.append(group_table(records, s.sampler) + "\n")
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


