"""A real ComfyUI, booted once in this process, for the pack's integration tests.

``boot()`` finds ComfyUI (tools/comfyui_runtime.py), loads ComfyUI's built-in extra nodes and
then this pack through ComfyUI's own custom-node loader, writes tiny random-weight models
(an SD1.5 UNet: EPS, an SD3 MMDiT: flow/CONST, TAESD decoders) to a temp dir, and adds a few
test-only nodes (random conditioning instead of CLIP, a latent capture).
Nothing here is imported by the pack.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import torch

from tools.comfyui_runtime import (PACK_DIR, comfyui_version, load_nodes, prepare_comfyui, prompt_executor,
                                   validate_prompt, with_cfg_override)

SAMPLER_NODE = "SamplerEVODiff"
TINY_SD15 = "evodiff_test_tiny_sd15.safetensors"
TINY_SD3 = "evodiff_test_tiny_sd3.safetensors"
TINY_VAE_SD15 = "evodiff_test_taesd_4ch.safetensors"
TINY_VAE_SD3 = "evodiff_test_taesd_16ch.safetensors"
SD3_CONTEXT_DIM = 64  # width of the tiny MMDiT's text context
SD3_POOLED_DIM = 32  # width of its pooled text vector (SD3 always reads pooled_output)

# What a test-only CONDITIONING looks like for each tiny model family.
CONDITIONING_SHAPES = {"sd15": (1, 8, 768), "sd3": (1, 8, SD3_CONTEXT_DIM)}
MODEL_FILES = {"sd15": (TINY_SD15, TINY_VAE_SD15), "sd3": (TINY_SD3, TINY_VAE_SD3)}

CAPTURED: dict[str, torch.Tensor] = {}  # EVODiffTestCaptureLatent writes here, keyed by its label


@dataclass
class Runtime:
    comfy_dir: Path
    version: str
    work_dir: Path
    pack_module_name: str
    nodes: object = field(repr=False)


def _initialise_weights(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """ComfyUI builds layers with torch.empty; fill params AND buffers with small random values."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in list(module.parameters()) + list(module.buffers()):
            if tensor.is_floating_point():
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.05)
    return module


def write_tiny_models(models_dir: Path) -> None:
    import comfy.supported_models
    import comfy.taesd.taesd
    from safetensors.torch import save_file

    sd15_config = {
        "use_checkpoint": False, "image_size": 32, "use_spatial_transformer": True, "legacy": False,
        "in_channels": 4, "out_channels": 4, "model_channels": 320, "num_res_blocks": [1],
        "channel_mult": [1], "transformer_depth": [1], "transformer_depth_output": [1, 1],
        "transformer_depth_middle": -1, "context_dim": 768, "num_heads": 8, "num_head_channels": -1,
        "use_linear_in_transformer": False, "adm_in_channels": None, "use_temporal_attention": False,
        "use_temporal_resblock": False,
        "num_classes": None,
    }
    sd3_config = {
        "in_channels": 16, "out_channels": 16, "patch_size": 2, "depth": 2, "input_size": None,
        "pos_embed_scaling_factor": None, "pos_embed_max_size": 16, "num_patches": 256,
        "context_embedder_config": {"target": "torch.nn.Linear",
                                    "params": {"in_features": SD3_CONTEXT_DIM, "out_features": 128}},
        "adm_in_channels": SD3_POOLED_DIM, "x_block_self_attn_layers": [],
    }
    builds = [
        (TINY_SD15, comfy.supported_models.SD15(sd15_config), 1),
        (TINY_SD3, comfy.supported_models.SD3(sd3_config), 2),
    ]
    for filename, model_config, seed in builds:
        model = model_config.get_model({})
        unet = _initialise_weights(model.diffusion_model, seed)
        state = {k: v.contiguous() for k, v in unet.state_dict().items()}
        save_file(state, str(models_dir / "diffusion_models" / filename))
    for filename, channels, seed in [(TINY_VAE_SD15, 4, 3), (TINY_VAE_SD3, 16, 4)]:
        decoder = _initialise_weights(comfy.taesd.taesd.Decoder(channels), seed)
        state = {"taesd_decoder." + k: v.contiguous() for k, v in decoder.state_dict().items()}
        save_file(state, str(models_dir / "vae" / filename))


class EVODiffTestConditioning:
    """Random CONDITIONING of the tiny model's width, standing in for a text encoder."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"family": (list(CONDITIONING_SHAPES),),
                             "seed": ("INT", {"default": 0, "min": 0, "max": 2**31})}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "make"
    CATEGORY = "_evodiff_test"

    def make(self, family, seed):
        generator = torch.Generator().manual_seed(seed)
        extras = {}
        if family == "sd3":
            extras["pooled_output"] = torch.randn((1, SD3_POOLED_DIM), generator=generator)
        return ([[torch.randn(CONDITIONING_SHAPES[family], generator=generator), extras]],)


class EVODiffTestCheckpoint:
    """MODEL, CLIP, VAE like CheckpointLoaderSimple, from the tiny files (CLIP is a placeholder)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"family": (list(MODEL_FILES),)}}

    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    FUNCTION = "load"
    CATEGORY = "_evodiff_test"

    def load(self, family):
        import nodes

        unet_file, vae_file = MODEL_FILES[family]
        model = nodes.UNETLoader().load_unet(unet_file, "default")[0]
        vae = nodes.VAELoader().load_vae(vae_file)[0]
        return (model, object(), vae)


class EVODiffTestCLIP:
    """A placeholder CLIP for graphs whose text encoders are replaced by EVODiffTestConditioning."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    RETURN_TYPES = ("CLIP",)
    FUNCTION = "load"
    CATEGORY = "_evodiff_test"

    def load(self):
        return (object(),)


class EVODiffTestCaptureLatent:
    """Output node that keeps the latent it receives in CAPTURED[label]."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",), "label": ("STRING", {"default": "out"})}}

    RETURN_TYPES = ()
    FUNCTION = "capture"
    OUTPUT_NODE = True
    CATEGORY = "_evodiff_test"

    def capture(self, samples, label):
        CAPTURED[label] = samples["samples"].clone()
        return {}


class EVODiffTestCFGOverride:
    """CFGOverride's inputs and effect, for ComfyUI versions older than that node (0.33)."""

    @classmethod
    def INPUT_TYPES(cls):
        percent = {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.001}
        return {"required": {"model": ("MODEL",), "cfg": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 100.0}),
                             "start_percent": ("FLOAT", percent), "end_percent": ("FLOAT", percent)}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"
    CATEGORY = "_evodiff_test"

    def patch(self, model, cfg, start_percent, end_percent):
        return (with_cfg_override(model, cfg, start_percent, end_percent),)


TEST_NODES = {cls.__name__: cls for cls in (EVODiffTestConditioning, EVODiffTestCheckpoint, EVODiffTestCLIP,
                                            EVODiffTestCaptureLatent, EVODiffTestCFGOverride)}


def cfg_override_node(runtime) -> str:
    """ComfyUI's CFGOverride where the running version has it, else the test stand-in."""
    return "CFGOverride" if "CFGOverride" in runtime.nodes.NODE_CLASS_MAPPINGS else "EVODiffTestCFGOverride"


class _Server:
    """The few attributes PromptExecutor uses from PromptServer; messages are kept for tests."""

    def __init__(self):
        self.client_id = None
        self.last_node_id = None
        self.last_prompt_id = None
        self.sockets_metadata = {}
        self.messages = []

    def send_sync(self, event, data, sid=None):
        self.messages.append((event, data))

    def queue_updated(self):
        pass


def boot() -> Runtime:
    comfy_dir = prepare_comfyui()
    torch.set_num_threads(1)
    work_dir = Path(tempfile.mkdtemp(prefix="evodiff-comfy-"))
    logging.getLogger().setLevel(logging.WARNING)  # ComfyUI's import chatter
    nodes = load_nodes(work_dir, PACK_DIR)
    nodes.NODE_CLASS_MAPPINGS.update(TEST_NODES)
    write_tiny_models(work_dir / "models")
    return Runtime(comfy_dir=comfy_dir, version=comfyui_version(), work_dir=work_dir,
                   pack_module_name=load_name(), nodes=nodes)


def load_name() -> str:
    """The sys.modules name ComfyUI's loader gives this pack (derived from its path)."""
    return str(PACK_DIR).replace(".", "_x_")


def shutdown(runtime: Runtime) -> None:
    shutil.rmtree(runtime.work_dir, ignore_errors=True)


def make_executor(runtime: Runtime):
    """A PromptExecutor without caching, reporting to a _Server (tools/comfyui_runtime.py)."""
    return prompt_executor(_Server())


class PromptFailed(AssertionError):
    pass


def validate(runtime: Runtime, prompt: dict):
    """ComfyUI's prompt validation; returns (ok, error, outputs, node_errors)."""
    return validate_prompt(prompt)


def run_prompt(runtime: Runtime, prompt: dict, executor=None):
    """Validate and execute an API-format prompt. Returns the executor (status_messages, success)."""
    ok, error, outputs, node_errors = validate(runtime, prompt)
    if not ok:
        raise PromptFailed(f"validate_prompt failed: {error} {node_errors}")
    executor = executor or make_executor(runtime)
    executor.execute(prompt, str(uuid.uuid4()), {}, outputs)
    return executor


def execution_error(executor) -> dict | None:
    for event, data in executor.status_messages:
        if event in ("execution_error", "execution_interrupted"):
            return {"event": event, **data}
    return None


def run_and_capture(runtime: Runtime, prompt: dict, label: str = "out") -> torch.Tensor:
    CAPTURED.pop(label, None)
    executor = run_prompt(runtime, prompt)
    error = execution_error(executor)
    if error is not None:
        raise PromptFailed(f"{error.get('event')}: {error.get('exception_message', '')}\n"
                           f"{''.join(error.get('traceback', []))}")
    return CAPTURED[label]
