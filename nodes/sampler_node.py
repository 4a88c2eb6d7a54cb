"""SamplerEVODiff: a SAMPLER for SamplerCustom / SamplerCustomAdvanced and sampler-wrapper nodes.

Written against ComfyUI's V3 node API (``comfy_api.latest``, ComfyUI >= 0.3.48); inputs and
schema fields that only newer versions know are passed only when the running ComfyUI has them.
"""
from __future__ import annotations

import inspect

import comfy.samplers
from comfy_api.latest import io

from ..evodiff_core import DEFAULT_SHIFT, NOISE_SCHEDULES, SHIFT_MAX, SHIFT_MIN, VARIANTS, option_problems
from .sampler_function import AUTO_NOISE_SCHEDULE, sample_evodiff

NODE_ID = "SamplerEVODiff"  # stable: saved workflows refer to it
CATEGORY = "sampling/custom_sampling/samplers"  # beside KSamplerSelect and the other SAMPLER nodes

DESCRIPTION = (
    "EVODiff (NeurIPS 2025): an entropy-aware, variance-optimized 2nd-order ODE sampler. "
    "Connect the SAMPLER output to SamplerCustom or SamplerCustomAdvanced. "
    "Works with EPS, v-prediction and flow-matching (SD3, Flux, Wan) models.")

# What the value does to the image; the maths is in the help page and docs/variants.md.
SHIFT_TOOLTIP = (
    "How soon the sampler falls back to a plain Euler step where strong cfg at few steps would "
    "break the image (0 = never, higher = sooner). This is not the model's timestep shift "
    "(ModelSamplingSD3 / Flux).")
VARIANT_TOOLTIP = (
    "Which EVODiff update rule to run. 'improved' (default): second order, flow-aware, and falls "
    "back to Euler where guidance makes its two slope estimates disagree. 'reference': the "
    "paper's official code, output for output (less robust under strong cfg at few steps).")
NOISE_SCHEDULE_TOOLTIP = (
    "How the latent was noised. 'auto' reads it from the model: 'flow' for flow-matching models "
    "(SD3, Flux, Wan...), 've' for EPS / v-prediction models (SD1.5, SDXL...). Override only when "
    "a model wrapper hides the model type.")


# Words users type in the node search; "evodiff" alone also finds an unrelated protein model.
SEARCH_ALIASES = ["evodiff", "evo diff", "variance", "entropy", "fast sampler", "low steps",
                  "few steps", "variance optimized", "entropy aware"]


def _accepts_keyword(function, name: str) -> bool:
    return name in inspect.signature(function).parameters


def newer_schema_fields(search_aliases: list[str]) -> dict:
    """search_aliases exists on io.Schema only in ComfyUI builds from 2026 on."""
    if "search_aliases" in getattr(io.Schema, "__dataclass_fields__", {}):
        return {"search_aliases": search_aliases}
    return {}


def _advanced() -> dict:
    """advanced=True (collapsed 'Advanced Inputs') exists on inputs only in newer ComfyUI."""
    return {"advanced": True} if _accepts_keyword(io.Combo.Input.__init__, "advanced") else {}


def _comfyui_checks_v3_combos() -> bool:
    """execution.py checks a V3 COMBO value against its options from ComfyUI 0.8.0 on; before,
    it checks only inputs whose type is the option list itself (the V1 form)."""
    try:
        from comfyui_version import __version__  # ComfyUI's root module, beside main.py
        return tuple(int(part) for part in __version__.split(".")[:2]) >= (0, 8)
    except (ImportError, ValueError):
        return False  # unknown: the V1 form is checked by every version


class _ListTypedCombo(io.Combo.Input):
    """A dropdown declared in the V1 form (its type is its option list), which every ComfyUI
    checks at queue time itself: one error, on this input, naming the bad value and the list."""

    def get_io_type(self):
        return list(self.options)


def _combo(name: str, **kwargs) -> io.Combo.Input:
    # ComfyUI's own check puts the error on the right input, once; a validate_inputs() of ours
    # would have its one message copied to every input it takes, which ComfyUI then skips.
    return io.Combo.Input(name, **kwargs) if _comfyui_checks_v3_combos() else _ListTypedCombo(name, **kwargs)


def _input_error(shift, variant, noise_schedule) -> str | None:
    """What is wrong with the values, naming this node and saying what to change; None if fine.
    'auto' is the node's own choice, resolved at sampling time."""
    given = {"shift": shift, "variant": variant, "noise_schedule": noise_schedule}
    problems = option_problems(**{name: value for name, value in given.items() if value != AUTO_NOISE_SCHEDULE})
    return f"{NODE_ID}: {'; '.join(problems)}" if problems else None


class SamplerEVODiff(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=NODE_ID,
            display_name="SamplerEVODiff",
            category=CATEGORY,
            description=DESCRIPTION,
            inputs=[
                io.Float.Input("shift", default=DEFAULT_SHIFT, min=SHIFT_MIN, max=SHIFT_MAX, step=0.01,
                               round=False, tooltip=SHIFT_TOOLTIP),
                _combo("variant", options=list(VARIANTS), default=VARIANTS[0], tooltip=VARIANT_TOOLTIP),
                _combo("noise_schedule", options=[AUTO_NOISE_SCHEDULE, *NOISE_SCHEDULES],
                       default=AUTO_NOISE_SCHEDULE, tooltip=NOISE_SCHEDULE_TOOLTIP, **_advanced()),
            ],
            outputs=[io.Sampler.Output()],
            **newer_schema_fields(SEARCH_ALIASES),
        )

    @classmethod
    def execute(cls, shift, variant, noise_schedule=AUTO_NOISE_SCHEDULE) -> io.NodeOutput:
        error = _input_error(shift, variant, noise_schedule)
        # ComfyUI checks the range and the lists at queue time; this catches what it lets through
        # (NaN, a value from a node that skips validation).
        if error:
            raise ValueError(error)
        return io.NodeOutput(evodiff_sampler(shift, variant, noise_schedule))


def evodiff_sampler(shift, variant=VARIANTS[0], noise_schedule=AUTO_NOISE_SCHEDULE):
    """The SAMPLER SamplerCustom(Advanced) runs: the pack's sampler function with these options."""
    options = {"shift": shift, "variant": variant, "noise_schedule": noise_schedule}
    return comfy.samplers.KSAMPLER(sample_evodiff, extra_options=options)
