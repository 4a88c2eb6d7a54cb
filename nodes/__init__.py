"""ComfyUI glue for EVODiff: the KSampler registration and the SamplerEVODiff node.

No solver maths lives here; everything numerical is in ``evodiff_core``.
"""
