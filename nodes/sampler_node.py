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

SHIFT_TOOLTIP = (
    "EVODiff's variance shift μ. 'improved': how soon a step falls back to the first-order (Euler) "
    "step when its two slope estimates disagree, as under strong cfg at few steps (0 = never, the "
    "most ODE-accurate without guidance; larger = sooner). 'reference': the offset "
    "in ζ = sigmoid(|ζ*| − μ). 0.5 is the paper's value. This is NOT the timestep 'shift' of "
    "ModelSamplingSD3 / ModelSamplingFlux (set that on the model).")
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


def _input_error(shift, variant, noise_schedule) -> str | None:
    """What is wrong with the widget values, naming this node and saying what to change; None if
    fine. None (an input linked from another node, unknown at queue time) is not checked, nor is
    'auto' (the node's own choice, resolved at sampling time)."""
    given = {"shift": shift, "variant": variant, "noise_schedule": noise_schedule}
    problems = option_problems(**{name: value for name, value in given.items()
                                  if value is not None and value != AUTO_NOISE_SCHEDULE})
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
                io.Combo.Input("variant", options=list(VARIANTS), default=VARIANTS[0], tooltip=VARIANT_TOOLTIP),
                io.Combo.Input("noise_schedule", options=[AUTO_NOISE_SCHEDULE, *NOISE_SCHEDULES],
                               default=AUTO_NOISE_SCHEDULE, tooltip=NOISE_SCHEDULE_TOOLTIP, **_advanced()),
            ],
            outputs=[io.Sampler.Output()],
            **newer_schema_fields(SEARCH_ALIASES),
        )

    @classmethod
    def validate_inputs(cls, shift=None, variant=None, noise_schedule=None) -> bool | str:
        """Checked when the prompt is queued; ComfyUI 0.3.x does not check V3 combo values itself."""
        return _input_error(shift, variant, noise_schedule) or True

    @classmethod
    def execute(cls, shift, variant, noise_schedule=AUTO_NOISE_SCHEDULE) -> io.NodeOutput:
        error = _input_error(shift, variant, noise_schedule)
        if error:  # reached when a caller skips validation (e.g. a node that builds this one)
            raise ValueError(error)
        options = {"shift": shift, "variant": variant, "noise_schedule": noise_schedule}
        return io.NodeOutput(comfy.samplers.KSAMPLER(sample_evodiff, extra_options=options))
