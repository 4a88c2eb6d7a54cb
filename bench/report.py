"""Markdown report and the plot: everything `scripts/bench` writes to bench_out/."""
from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path

from . import quality as q
from .cost import THRESHOLD, cost_table


def machine() -> str:
    import torch

    from .comfy_samplers import comfyui

    cpu = platform.processor() or platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    version = "unknown"
    version_file = Path(comfyui().samplers.__file__).resolve().parent.parent / "comfyui_version.py"
    if version_file.exists():
        version = version_file.read_text().split("=")[-1].strip().strip("\"'")
    threads = os.environ.get("OMP_NUM_THREADS", "default")
    return (f"{cpu}, {os.cpu_count()} cores (OMP_NUM_THREADS={threads}), no GPU; "
            f"torch {torch.__version__}, ComfyUI {version}, Python {platform.python_version()}")


def core_digest() -> str:
    """sha256 of evodiff_core/*.py: which solver code was measured, committed or not."""
    import hashlib

    core = Path(__file__).resolve().parent.parent / "evodiff_core"
    digest = hashlib.sha256()
    for path in sorted(core.glob("*.py")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:12]


def header(command: str, seconds: float, settings: str, digest: str) -> str:
    """``digest``: core_digest() taken when the run started (the code it imported)."""
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f"Command: `{command}` — {date} — {seconds:.0f} s\n\n"
            f"Machine: {machine()}\n\nSettings: {settings}; evodiff_core/*.py sha256 {digest}\n")


def references_table(summary) -> str:
    lines = ["| problem | family | scheduler | samples | RK4 steps | RMS change at 2× steps (128 samples) | FD floor (exact vs data) |",
             "|---|---|---|---:|---:|---:|---:|"]
    for r in summary:
        lines.append(f"| {r['problem']} | {r['family']} | {r['scheduler']} | {r['n']} | {r['ode_steps']} | "
                     f"{r['refinement_rms']:.1e} | {r['fd_data']:.3g} |")
    return "\n".join(lines)


def noise_table(records) -> str:
    """Typical and worst split-half noise per cell, to read the differences against."""
    lines = ["| cell | RMS error: median noise | max | excess FD: median noise | max |", "|---|---:|---:|---:|---:|"]
    for cell in dict.fromkeys(r["cell"] for r in records):
        rs = [r for r in records if r["cell"] == cell]
        rms = sorted(r["rms_noise"] for r in rs)
        fd = sorted(r["excess_fd_noise"] for r in rs)
        lines.append(f"| {cell} | {rms[len(rms) // 2]:.1e} | {rms[-1]:.1e} | {fd[len(fd) // 2]:.2g} | {fd[-1]:.2g} |")
    return "\n".join(lines)


def verdicts(records, metric: str = "excess_fd", rival: str = "dpmpp_2m") -> str:
    """Where each EVODiff variant wins and loses against ``rival``, per cell, as a table.

    A difference counts only when it exceeds twice the combined split-half noise; "best" lists
    the NFEs where the variant beats every built-in sampler (no noise check).
    """
    score = abs if metric == "excess_fd" else (lambda v: v)
    by_key = {(r["sampler"], r["cell"], r["nfe_target"]): r for r in records}
    samplers = list(dict.fromkeys(r["sampler"] for r in records))
    variants = [s for s in samplers if s.startswith("evodiff")]
    builtins = [s for s in samplers if not s.startswith("evodiff")]
    cells = list(dict.fromkeys(r["cell"] for r in records))
    nfes = sorted({r["nfe_target"] for r in records})
    lines = [f"| {metric}: vs {rival} | " + " | ".join(cells) + " |", "|---" + "|---" * len(cells) + "|"]
    for v in variants:
        row = []
        for cell in cells:
            better, worse, best = [], [], []
            for nfe in nfes:
                r, other = by_key.get((v, cell, nfe)), by_key.get((rival, cell, nfe))
                if r is None or other is None:
                    continue
                noise = 2 * (r[f"{metric}_noise"] ** 2 + other[f"{metric}_noise"] ** 2) ** 0.5
                diff = score(r[metric]) - score(other[metric])
                (better if diff < -noise else worse if diff > noise else []).append(str(nfe))
                rivals = [score(by_key[(b, cell, nfe)][metric]) for b in builtins if (b, cell, nfe) in by_key]
                if rivals and score(r[metric]) < min(rivals):
                    best.append(str(nfe))
            text = f"better @{' '.join(better) or '–'}; worse @{' '.join(worse) or '–'}"
            row.append(text + (f"; best of all @{' '.join(best)}" if best else ""))
        lines.append(f"| {v} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def ranks(records, metrics=("excess_fd", "rms"), nfes=q.NFES_MATRIX) -> str:
    """Each EVODiff variant's rank among all samplers (1 = best) per cell at the given NFEs."""
    cells = list(dict.fromkeys(r["cell"] for r in records))
    samplers = list(dict.fromkeys(r["sampler"] for r in records))
    by_key = {(r["sampler"], r["cell"], r["nfe_target"]): r for r in records}
    lines = [f"| rank of {len(samplers)} at NFE {'/'.join(map(str, nfes))} | " + " | ".join(cells) + " |",
             "|---" + "|---:" * len(cells) + "|"]
    for v in (s for s in samplers if s.startswith("evodiff")):
        for metric in metrics:
            score = abs if metric == "excess_fd" else (lambda x: x)
            row = []
            for cell in cells:
                row.append(" / ".join(
                    str(1 + sum(score(by_key[(o, cell, n)][metric]) < score(by_key[(v, cell, n)][metric])
                                for o in samplers if (o, cell, n) in by_key))
                    for n in nfes if (v, cell, n) in by_key))
            lines.append(f"| {v}, {metric} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def cell_tables(records, cell) -> list[str]:
    """One cell's tables by NFE: RMS, excess FD, and component changes (mixture) or the FDs to
    the converged solution and to the data (learned model)."""
    where = {"cell": cell}
    problem = next(r["problem"] for r in records if r["cell"] == cell)
    exact = "exact" if problem == "mixture" else "converged"
    by_nfe = lambda metric: q.table(records, metric, columns="nfe_target", where=where) + "\n"  # noqa: E731
    out = [f"RMS error against the {exact} ODE solution:\n\n" + by_nfe("rms"),
           "Excess FD:\n\n" + by_nfe("excess_fd")]
    if problem == "mixture":
        out.append(f"Samples (of {records[0]['n_samples']}) ending in another mixture component than the "
                   "exact solution:\n\n" + by_nfe("changed"))
    else:
        out.append("FD to the converged solution's samples (feature space):\n\n" + by_nfe("fd_converged"))
        out.append("FD to the data (feature space; includes the model's own error):\n\n" + by_nfe("fd_data"))
    return out


def quality_report(records, nfes_matrix=q.NFES_MATRIX) -> str:
    parts = []
    matrix_nfes = [n for n in nfes_matrix if any(r["nfe_target"] == n for r in records)]
    parts.append("### Excess FD (FD to the data minus the exact/converged ODE solution's; lower |value| is better)\n")
    for nfe in matrix_nfes:
        parts.append(f"NFE {nfe}:\n\n" + q.table(records, "excess_fd", where={"nfe_target": nfe}) + "\n")
    for cell in dict.fromkeys(r["cell"] for r in records):
        parts.append(f"### {cell}\n")
        parts += cell_tables(records, cell)
    return "\n".join(parts)


def cost_report(records) -> str:
    return (f"Overhead per step with a trivial model, the model's own time subtracted (median of the "
            f"repeats, min–max spread); threshold ≤ {THRESHOLD:g}× dpmpp_2m's median per step and peak "
            f"memory ≤ dpmpp_2m's + 1 latent.\n\n" + cost_table(records) + "\n")


def plot(records, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = list(dict.fromkeys(r["cell"] for r in records))
    samplers = list(dict.fromkeys(r["sampler"] for r in records))
    cols = 3
    rows = (len(cells) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    variant_colors = iter(["black", "crimson", "darkviolet", "darkgoldenrod"])
    builtin_colors = iter(c for i, c in enumerate(plt.get_cmap("tab10").colors) if i != 3)  # no red
    styles = {s: dict(color=next(variant_colors), lw=2.4, ls="-") if s.startswith("evodiff")
              else dict(color=next(builtin_colors), lw=1.0, ls="--") for s in samplers}
    nfes = sorted({r["nfe_target"] for r in records})
    for ax, cell in zip(axes.flat, cells):
        for s in samplers:
            pts = sorted((r["nfe"], r["rms"]) for r in records if r["cell"] == cell and r["sampler"] == s)
            ax.plot(*zip(*pts), marker="o", ms=3, label=s, **styles[s])
        ax.set_yscale("log")
        ax.set_xticks(nfes)
        ax.set_title(cell, fontsize=9)
        ax.set_xlabel("NFE (measured)", fontsize=8)
        ax.grid(alpha=0.3, which="both")
        ax.tick_params(labelsize=7)
    for ax in axes.flat[len(cells):]:
        ax.axis("off")
    axes[0][0].set_ylabel("RMS error vs exact ODE", fontsize=8)
    if rows > 1:
        axes[1][0].set_ylabel("RMS error vs converged ODE", fontsize=8)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(6, len(labels)), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=72)
    plt.close(fig)


def readme_section(results: dict) -> str:
    """The README's bench section body, from a results.json of `scripts/bench --full`."""
    records, cost_records = results["quality"], results["cost"]
    cells = list(dict.fromkeys(r["cell"] for r in records))
    out = [results["header"],
           "![RMS error against the exact (mixture) or converged (digits) ODE solution, by NFE]"
           "(benchmark.png)\n",
           "#### Where EVODiff wins and loses, by NFE (automatic; a difference counts when it exceeds "
           "twice the combined split-half noise; NFEs not listed are ties)\n",
           verdicts(records, "excess_fd") + "\n", verdicts(records, "rms") + "\n",
           "Rank among all samplers (1 = best; excess FD by |value|, not noise-checked):\n",
           ranks(records) + "\n",
           "#### Excess FD at 5, 8 and 10 NFE (lower |value| is better)\n"]
    for nfe in q.NFES_MATRIX:
        out.append(f"NFE {nfe}:\n\n" + q.table(records, "excess_fd", where={"nfe_target": nfe}) + "\n")
    out.append("#### Cost per step (model excluded) and peak memory\n")
    out.append(cost_report(cost_records))
    for cell in cells:
        problem = next(r["problem"] for r in records if r["cell"] == cell)
        out.append(f"<details><summary>{cell}: RMS error, excess FD, "
                   f"{'component changes' if problem == 'mixture' else 'FD to converged / to data'} by NFE</summary>\n")
        out += cell_tables(records, cell)
        out.append("</details>\n")
    out.append("<details><summary>Exact solutions (convergence check) and run-to-run noise</summary>\n")
    out.append(references_table(results["references"]) + "\n")
    out.append(noise_table(records) + "\n")
    out.append("</details>\n")
    return "\n".join(out)


if __name__ == "__main__":
    import json
    import sys

    print(readme_section(json.loads(Path(sys.argv[1]).read_text())))
