"""The unguided matrix's markdown (bench_out/report.md, docs/benchmarks.md) and the run's last line.

Layout only: the comparisons come from bench.verdicts."""
from __future__ import annotations

from collections import Counter

from . import comfy_samplers as cs
from .cells import BENCH_FULL, BENCH_QUICK
from .common import is_evodiff, md_table
from .cost import THRESHOLD, cost_table
from .verdicts import (NOISE_FACTOR, RIVAL, by_point, comparisons, in_words, nfe_words, pivot, rank, tally,
                       too_noisy)

FULL_MINUTES = 11     # `scripts/bench --full` on 2 shared cores (docs/benchmarks.md's header has the last)
METRIC_NAMES = {"excess_fd": "excess FD", "rms": "RMS error"}


def table(records, value: str, columns: str = "cell", where=None) -> str:
    """``value`` where the records match ``where``: rows = samplers, columns = cells or "nfe_target"."""
    return pivot([r for r in records if all(r[k] == v for k, v in (where or {}).items())], value, columns,
                 dagger=False)


def references_table(summary) -> str:
    return md_table(["problem", "family", "scheduler", "samples", "RK4 steps", "RMS change at 2× steps (128 samples)",
                     "FD floor (exact vs data)"],
                    [[r["problem"], r["family"], r["scheduler"], r["n"], r["ode_steps"], f"{r['refinement_rms']:.1e}",
                      f"{r['fd_data']:.3g}"] for r in summary], "lllrrrr")


def noise_table(records) -> str:
    rows = []
    for cell in dict.fromkeys(r["cell"] for r in records):
        rms = sorted(r["rms_noise"] for r in records if r["cell"] == cell)
        fd = sorted(r["excess_fd_noise"] for r in records if r["cell"] == cell)
        rows.append([cell, f"{rms[len(rms) // 2]:.1e}", f"{rms[-1]:.1e}", f"{fd[len(fd) // 2]:.2g}", f"{fd[-1]:.2g}"])
    return md_table(["cell", "RMS error: median noise", "max", "excess FD: median noise", "max"], rows, "lrrrr")


def default_variant() -> str:
    """'evodiff:improved'."""
    return cs.evodiff_variants()[0]


def verdicts(records, metric: str = "excess_fd", rival: str = RIVAL) -> str:
    """Every EVODiff variant against rival, per cell, in words (rows = cells, columns = variants)."""
    variants = [s for s in dict.fromkeys(r["sampler"] for r in records) if is_evodiff(s)]
    found = {v: comparisons(records, metric, v, rival) for v in variants}

    def words(f):
        return in_words(f) + (f"; below every built-in at {nfe_words(f['best'], f['measured'])}" if f["best"] else "")

    return md_table([f"{METRIC_NAMES[metric]}, against {rival}", *variants],
                    [[cell] + [words(found[v][cell]) for v in variants]
                     for cell in dict.fromkeys(r["cell"] for r in records)], "l" * (1 + len(variants)))


def variant_tables(records) -> list[str]:
    return [verdicts(records, metric) + "\n" for metric in METRIC_NAMES]


def is_quick(records) -> bool:
    """Fewer samples per cell than the full run's: ties there may only be noise."""
    return min(r["n_samples"] for r in records) < BENCH_FULL.n_samples


def summary(records, rival: str = RIVAL, full_minutes: int = FULL_MINUTES) -> str:
    """The report's opening in plain words: per cell, the default variant against the rival."""
    me, n = default_variant(), min(r["n_samples"] for r in records)
    fd, rms = comparisons(records, "excess_fd", me, rival), comparisons(records, "rms", me, rival)
    count = tally(fd)
    points = sum(count.values())
    lines = [f"**{me}** (the pack's default) against **{rival}**, cell by cell. A difference counts only when it "
             f"is more than {NOISE_FACTOR:g}× the combined run-to-run noise (split-half standard error); smaller "
             "ones are \"no difference beyond noise\".\n",
             md_table(["cell", f"distribution error ({METRIC_NAMES['excess_fd']})",
                       f"per-sample error ({METRIC_NAMES['rms']})"],
                      [[cell, in_words(fd[cell]), in_words(rms[cell])] for cell in fd], "lll")]
    lines.append(f"\nBy {METRIC_NAMES['excess_fd']}, over {points} (cell, NFE) points: better at {count['better']}, "
                 f"worse at {count['worse']}, no difference beyond noise at {count['tie']}.")
    if is_quick(records):
        if too_noisy(count):
            lines.append(f"\n**The quick run is too noisy to separate most samplers** ({count['tie']} of {points} "
                         f"points are within noise at {n} samples per cell). Run `scripts/bench --full` "
                         f"(about {full_minutes} min on 2 cores) for a conclusive answer.")
        else:
            lines.append(f"\nThis is the quick run ({n} samples per cell); `scripts/bench --full` (about "
                         f"{full_minutes} min on 2 cores) measures {len(BENCH_FULL.nfes)} NFEs at "
                         f"{BENCH_FULL.n_samples} samples.")
    else:
        lines.append(f"\nAt {n} samples per cell a tie means the two samplers agree to within what this "
                     "benchmark can measure.")
    return "\n".join(lines) + "\n"


def cost_summary(cost_records, sampler: str | None = None) -> str:
    """The cost in one clause: the range of the median ratios to dpmpp_2m, and their time verdicts."""
    sampler = sampler or default_variant()
    mine = [r for r in cost_records if r["sampler"] == sampler]
    if not mine:
        return "not measured"
    ratios = sorted(r["ratio_to_dpmpp_2m"] for r in mine)
    span = f"{ratios[0]:.2f}×" if len(ratios) == 1 else f"{ratios[0]:.2f}–{ratios[-1]:.2f}×"
    text = f"{span} dpmpp_2m's per step over {len(mine)} latent sizes"
    counts = Counter(r["time_verdict"] for r in mine)
    where = ", ".join(f"{word} at {counts[key]}" for key, word in
                      (("above", f"above {THRESHOLD:g}× beyond noise"), ("within noise", "within noise of it"),
                       ("below", "below it")) if counts[key])
    memory = sum(not r["memory_ok"] for r in mine)
    return text + f" ({where}" + (f"; memory over the margin at {memory}" if memory else "") + ")"


def final_verdict(records, cost_records) -> str:
    """The run's last line."""
    me = default_variant()
    count = tally(comparisons(records, "excess_fd", me, RIVAL))
    noisy = "; too noisy to separate most points, run scripts/bench --full" if (
        is_quick(records) and too_noisy(count)) else ""
    cost = cost_summary(cost_records, me) if cost_records else "not measured (--no-cost)"
    return (f"[bench] verdict: {me} beats {RIVAL} beyond noise at {count['better']} of {sum(count.values())} points "
            f"(excess FD), loses at {count['worse']}{noisy}; cost {cost}")


def ranks(records, metrics=("excess_fd", "rms"), nfes=BENCH_QUICK.nfes) -> str:
    """Each EVODiff variant's rank among all samplers (1 = best) per cell at the given NFEs."""
    cells = list(dict.fromkeys(r["cell"] for r in records))
    samplers = list(dict.fromkeys(r["sampler"] for r in records))
    points = by_point(records)

    def ranked(v, cell, metric):
        groups = [points[(cell, n)] for n in nfes if v in points.get((cell, n), {})]
        return " / ".join(str(rank(group[v], list(group.values()), metric)) for group in groups)

    rows = [[f"{v}, {METRIC_NAMES[metric]}"] + [ranked(v, c, metric) for c in cells]
            for v in samplers if is_evodiff(v) for metric in metrics]
    head = [f"rank of {len(samplers)} at NFE {'/'.join(map(str, nfes))}", *cells]
    return md_table(head, rows, "l" + "r" * len(cells))


def cell_tables(records, cell) -> list[str]:
    """One cell's tables by NFE: RMS, excess FD, and component changes (mixture) or the FDs (digits)."""
    where = {"cell": cell}
    problem = next(r["problem"] for r in records if r["cell"] == cell)
    exact = "exact" if problem == "mixture" else "converged"
    by_nfe = lambda metric: table(records, metric, columns="nfe_target", where=where) + "\n"  # noqa: E731
    out = [f"RMS error against the {exact} ODE solution:\n\n" + by_nfe("rms"),
           "Excess FD:\n\n" + by_nfe("excess_fd")]
    if problem == "mixture":
        out.append(f"Samples (of {records[0]['n_samples']}) ending in another mixture component than the "
                   "exact solution:\n\n" + by_nfe("changed"))
    else:
        out.append("FD to the converged solution's samples (feature space):\n\n" + by_nfe("fd"))
        out.append("FD to the data (feature space; includes the model's own error):\n\n" + by_nfe("fd_data"))
    return out


def excess_fd_tables(records, nfes=BENCH_QUICK.nfes) -> list[str]:
    """One table per NFE of ``nfes`` that the records have."""
    return [f"NFE {nfe}:\n\n" + table(records, "excess_fd", where={"nfe_target": nfe}) + "\n"
            for nfe in nfes if any(r["nfe_target"] == nfe for r in records)]


def cost_report(records) -> str:
    return (f"Overhead per step with a trivial model, the model's own time subtracted: the median of the "
            f"repeats (min–max), and the ratio to dpmpp_2m as the median of the paired repeats (they ran "
            f"side by side) with its spread: the interquartile range, or the whole range below 4 repeats. "
            f"The time verdict compares that spread with the {THRESHOLD:g}× threshold: below, above, or "
            f"within noise when the spread straddles it. Peak memory should stay within dpmpp_2m's + 1 "
            f"latent.\n\n" + cost_table(records) + "\n")


def report_markdown(results: dict, title: str) -> str:
    """bench_out/report.md."""
    records, cost_records = results["quality"], results["cost"]
    md = [f"# {title}\n", "## Summary\n", summary(records),
          f"Last line of the run: {final_verdict(records, cost_records).removeprefix('[bench] ')}\n",
          "## This run\n", results["header"],
          "## Exact ODE solutions (convergence check by refinement)\n", references_table(results["references"]) + "\n",
          "## Run-to-run noise (split-half standard error)\n", noise_table(records) + "\n",
          "## Every EVODiff variant against dpmpp_2m\n", *variant_tables(records), ranks(records) + "\n",
          "## Quality\n", "### Excess FD (FD to the data minus the exact/converged ODE solution's; lower "
          "|value| is better)\n", *excess_fd_tables(records)]
    for cell in dict.fromkeys(r["cell"] for r in records):
        md += [f"### {cell}\n", *cell_tables(records, cell)]
    if cost_records:
        md += ["## Cost\n", cost_report(cost_records)]
    return "\n".join(md)


METHOD = """\
Every sampler runs exactly as ComfyUI's KSampler runs it: real `comfy.model_sampling` objects
(SD1.5 EPS with the karras and normal schedulers, SD3 flow with shift 3 and the simple
scheduler), `comfy.samplers.calculate_sigmas`, and `KSAMPLER.sample` with its noise scaling. The
model is replaced by a problem whose right answer is known:

* **mixture**: a 10-component Gaussian mixture in 64 dimensions (anisotropic, unequal weights).
  Its denoiser is exact, so every error is the sampler's.
* **digits**: a small learned denoiser (EDM preconditioning) on scikit-learn's 8×8 digits. Here
  the right answer is the same model solved to convergence, so model error does not count.

**The exact solution** is the probability-flow ODE from the same starting noise, solved with
RK4 in log sigma with many steps; doubling the steps changes it by the RMS shown under
*Exact solutions* below (far under every difference reported).

**NFE** is the number of model calls, counted, never assumed (a sampler that cannot hit a target
exactly shows the NFE it used as `@n`).

**The metrics**, lower is better:

* *FD to the exact solution* (the figures): the Fréchet distance between the sampler's samples
  and the exact solution's samples from the same noise (raw 64 dimensions for the mixture, the
  64 features of a small digit classifier for digits). 0 means the same distribution.
* *Excess FD* (the verdicts): the FD of the sampler's samples to the data minus the exact
  solution's FD to the data, i.e. how much distribution quality the sampler loses. It can come
  out slightly negative by chance, so it is ranked by its size.
* *RMS error*: how far each sample lands from where the exact solution puts it from the same
  noise, averaged over every pixel. It sees per-sample errors that leave the distribution alone.

**Noise**: each metric is also computed on the two halves of the samples; half their difference
is the standard error of the full estimate. A difference between two samplers counts only when
it is more than twice their combined noise; smaller ones are ties.
"""


def figure_markdown(alt: str, caption: str, name: str) -> str:
    return f"![{alt}]({name})\n\n*{caption}*\n"


def benchmarks_markdown(results: dict, headline: tuple[str, str, str], figures: list[tuple[str, str, str]],
                        guided_summary: str = "") -> str:
    """docs/benchmarks.md. ``headline`` and each of ``figures``: (alt text, caption, file name in docs/);
    ``guided_summary``: stress.md's summary list, quoted under the headline."""
    records, cost_records = results["quality"], results["cost"]
    out = ["# Benchmarks: quality per NFE and cost per step\n",
           "Written by `scripts/bench --full` from its own run (the unguided cells, the cost per step, the digit "
           "grid). The guided figure comes from `python -m bench.stress_heldout` (held-out noise seed), which "
           "writes it with [stress.md](stress.md), the guided and wide-range tables. Do not edit by hand.\n",
           "## Summary\n",
           "**Guided sampling** (classifier-free guidance, as most images are made): [stress.md](stress.md) has "
           + ("the tables; its summary of all its cells, guided and not:\n" if guided_summary
              else "the tables and its own summary.\n"),
           figure_markdown(*headline)]
    if guided_summary:
        out.append(guided_summary)
    out.append("**Unguided cells of this run**: " + summary(records))
    if cost_records:
        out.append(f"**Cost**: {cost_summary(cost_records)}; table below.\n")
    out += ["## Method\n", METHOD, "## Figures\n"]
    out += [figure_markdown(*f) for f in figures]
    out += ["## This run\n", results["header"],
            "## Where each EVODiff variant wins and loses against dpmpp_2m\n", *variant_tables(records),
            "Rank among all samplers (1 = best; excess FD by its size, not noise-checked):\n",
            ranks(records) + "\n", "## Excess FD at 5, 8 and 10 NFE\n"] + excess_fd_tables(records)
    if cost_records:
        out += ["## Cost per step (model excluded) and peak memory\n", cost_report(cost_records)]
    out.append("## Every cell by NFE\n")
    for cell in dict.fromkeys(r["cell"] for r in records):
        problem = next(r["problem"] for r in records if r["cell"] == cell)
        out.append(f"<details><summary>{cell}: RMS error, excess FD, "
                   f"{'component changes' if problem == 'mixture' else 'FD to converged / to data'} by NFE</summary>\n")
        out += cell_tables(records, cell)
        out.append("</details>\n")
    out += ["## Exact solutions (convergence check) and run-to-run noise\n",
            references_table(results["references"]) + "\n", noise_table(records) + "\n"]
    return "\n".join(out)
