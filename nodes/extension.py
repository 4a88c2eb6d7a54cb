"""The pack's V3 extension: the nodes ComfyUI lists (SamplerEVODiff, EVODiffCalibrate)."""
from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from .calibrate_node import EVODiffCalibrate
from .sampler_node import SamplerEVODiff


class EVODiffExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [SamplerEVODiff, EVODiffCalibrate]


async def comfy_entrypoint() -> EVODiffExtension:
    return EVODiffExtension()
