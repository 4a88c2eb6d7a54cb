"""EVODiff sampler for ComfyUI: "evodiff" in every sampler_name list, the SamplerEVODiff and EVODiffCalibrate nodes.

ComfyUI loads this file with its custom-node loader. The sampler list is extended here, at
import, because ComfyUI 0.3.75 and older never call ComfyExtension.on_load.
"""
from .nodes.registration import register_evodiff_sampler
from .nodes.extension import comfy_entrypoint

register_evodiff_sampler()

WEB_DIRECTORY = "./web"  # web/docs/SamplerEVODiff/en.md (and SamplerEVODiff.md for other locales) is the help page
__all__ = ["comfy_entrypoint", "WEB_DIRECTORY"]
