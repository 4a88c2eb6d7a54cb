"""The pack's pictures: the Registry icon and one thumbnail per example workflow.

Each thumbnail's text is read from its workflow (sampler, scheduler, steps, cfg, variant), so a
thumbnail cannot say something its workflow does not do. Rerun after editing a workflow:

    .venv/bin/python -m tools.thumbnails      # -> docs/icon.png, example_workflows/*.jpg
"""
from __future__ import annotations

import json
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parent.parent
WORKFLOWS = PACK_DIR / "example_workflows"
ICON = PACK_DIR / "docs" / "icon.png"
ICON_SIZE = 400          # the Registry wants a square icon of at most 400×400
THUMBNAIL_SIZE = (400, 300)

BACKGROUND, ACCENT, TEXT, MUTED = "#171a24", "#7fa8ff", "#ffffff", "#b7c8f0"

# The headline of each workflow: what it shows, in the words of its Note.
TITLES = {
    "EVODiff 1 - SD1.5 with KSampler": ("KSampler + evodiff", "SD1.5 txt2img"),
    "EVODiff 2 - SDXL with SamplerCustomAdvanced": ("SamplerEVODiff", "SDXL, SamplerCustomAdvanced"),
    "EVODiff 3 - SD3.5 flow matching": ("SamplerEVODiff", "SD3.5 flow matching"),
    "EVODiff 4 - SDXL base and refiner": ("KSamplerAdvanced ×2", "SDXL base → refiner"),
    "EVODiff 5 - SDXL with a calibrated schedule": ("EVODiffCalibrate", "SDXL, a schedule learned on the model"),
}


def _nodes(workflow: dict, node_type: str) -> list[dict]:
    return [n for n in workflow["nodes"] if n["type"] == node_type]


def settings_lines(workflow: dict) -> list[str]:
    """Two short lines: the sampler as the workflow sets it, then scheduler, steps and cfg."""
    ksamplers = _nodes(workflow, "KSampler") + _nodes(workflow, "KSamplerAdvanced")
    if ksamplers:  # widgets: [add_noise,] seed, control, steps, cfg, sampler_name, scheduler, ...
        values = ksamplers[0]["widgets_values"]
        offset = 1 if ksamplers[0]["type"] == "KSamplerAdvanced" else 0
        steps, cfg, sampler_name, scheduler = values[offset + 2:offset + 6]
        first = f"sampler: {sampler_name}" + (f" (×{len(ksamplers)} stages)" if len(ksamplers) > 1 else "")
        return [first, f"{scheduler}, {steps} steps, cfg {cfg:g}"]
    calibrated = _nodes(workflow, "EVODiffCalibrate")
    if calibrated:   # widgets: cfg, steps, samples, seed, control; its SAMPLER is evodiff at a calibrated shift
        sampler = "evodiff, calibrated shift"
        scheduler, steps = "calibrated schedule", calibrated[0]["widgets_values"][1]
    else:
        shift, variant, _ = _nodes(workflow, "SamplerEVODiff")[0]["widgets_values"]
        sampler = f"shift {shift:g}, variant {variant}"
        scheduler, steps, _ = _nodes(workflow, "BasicScheduler")[0]["widgets_values"]
    cfg = _nodes(workflow, "CFGGuider")[0]["widgets_values"][0]
    model_shift = [n["widgets_values"][0] for n in _nodes(workflow, "ModelSamplingSD3")]
    tail = f", model shift {model_shift[0]:g}" if model_shift else ""
    return [sampler, f"{scheduler}, {steps} steps, cfg {cfg:g}{tail}"]


def _trajectories(ax, width: float, height: float, bottom: float = 0.0, count: int = 9) -> None:
    """ODE paths from spread-out noise (left) to two data points (right): what a sampler does."""
    import numpy as np

    t = np.linspace(0.0, 1.0, 120)
    for k in range(count):
        start = (k / (count - 1) - 0.5) * 0.9 * height
        end = (0.18 if k >= count // 2 else -0.18) * height
        blend = t ** 1.6  # paths bend late, as the denoiser sharpens near sigma = 0
        ax.plot(0.08 * width + t * 0.84 * width, bottom + height / 2 + start * (1 - blend) + end * blend,
                color=ACCENT, alpha=0.35 + 0.65 * k / (count - 1), linewidth=2.2, solid_capstyle="round")


def _pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def render_icon(path: Path = ICON) -> None:
    plt = _pyplot()
    fig = plt.figure(figsize=(4, 4), dpi=ICON_SIZE / 4)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 1), ax.set_ylim(0, 1), ax.axis("off")
    fig.patch.set_facecolor(BACKGROUND)
    _trajectories(ax, 1.0, 0.5, bottom=0.22)
    ax.text(0.5, 0.83, "EVODiff", color=TEXT, fontsize=44, fontweight="bold", ha="center", va="center")
    ax.text(0.5, 0.12, "few-step sampler", color=MUTED, fontsize=20, ha="center", va="center")
    fig.savefig(path, facecolor=BACKGROUND)
    plt.close(fig)


def render_thumbnail(workflow_path: Path) -> Path:
    """Write <workflow>.jpg beside the workflow and return its path."""
    plt = _pyplot()
    workflow = json.loads(workflow_path.read_text())
    title, subtitle = TITLES[workflow_path.stem]
    width, height = THUMBNAIL_SIZE
    fig = plt.figure(figsize=(width / 100, height / 100), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width), ax.set_ylim(height, 0), ax.axis("off")
    fig.patch.set_facecolor(BACKGROUND)
    ax.text(20, 30, "EVODiff", color=ACCENT, fontsize=13, fontweight="bold", va="center")
    ax.text(20, 68, title, color=TEXT, fontsize=20, fontweight="bold", va="center")
    ax.text(20, 106, subtitle, color=MUTED, fontsize=13, va="center")
    for row, line in enumerate(settings_lines(workflow)):
        ax.text(20, 146 + 26 * row, line, color=MUTED, fontsize=11.5, va="center")
    inset = fig.add_axes((0.05, 0.04, 0.9, 0.28))
    inset.set_xlim(0, 1), inset.set_ylim(0, 1), inset.axis("off")
    _trajectories(inset, 1.0, 1.0)
    out = workflow_path.with_suffix(".jpg")
    fig.savefig(out, facecolor=BACKGROUND, pil_kwargs={"quality": 90})
    plt.close(fig)
    return out


def main() -> None:
    render_icon()
    for workflow_path in sorted(WORKFLOWS.glob("*.json")):
        print("wrote", render_thumbnail(workflow_path).relative_to(PACK_DIR))
    print("wrote", ICON.relative_to(PACK_DIR))


if __name__ == "__main__":
    main()
