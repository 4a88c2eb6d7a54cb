"""The import stubs for torchvision/torchaudio (tools/stubs) and the one seam (tools/comfyui_runtime.py).

Each stub check runs in a fresh interpreter, with fake packages on sys.path standing in for a
real package that loads and for one that fails to load, so it does not depend on what this
machine has installed.
"""
import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tools.comfyui_runtime import PACK_DIR, find_comfyui_dir

STUBBED_ROOTS = ("torchvision", "torchaudio")


def run_isolated(tmp_path, code: str, packages: dict[str, dict[str, str]]) -> dict:
    """Run ``code`` in a new interpreter with ``packages`` ({name: {file: source}}) first on
    sys.path and the repository importable; ``code`` sets ``result`` (JSON) for the caller."""
    site = tmp_path / "site"
    for package, files in packages.items():
        for filename, source in files.items():
            path = site / package / filename
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(source))
    script = (f"import json, sys\nsys.path[:0] = [{str(site)!r}, {str(PACK_DIR)!r}]\n"
              + textwrap.dedent(code) + "\nprint('RESULT=' + json.dumps(result))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    line = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT=")][-1]
    return json.loads(line[len("RESULT="):])


BROKEN = {"__init__.py": """
    from . import _C   # a half-initialised package: the submodule loads, then the package fails
    raise RuntimeError("simulated build that cannot load beside this torch")
    """, "_C.py": "LOADED = True\n"}
WORKING = {"__init__.py": "REAL = True\n", "ops.py": "def roi_align(*args):\n    return 'real roi_align'\n"}


def test_every_import_succeeds_when_the_real_package_fails(tmp_path):
    result = run_isolated(tmp_path, """
        from tools import stubs
        stubbed = stubs.install_where_missing()
        import torchvision.ops
        from torchvision.ops import roi_align, nms
        import torchvision.models.optical_flow
        from torchvision.models.optical_flow import raft_large
        import torchvision.transforms.functional as TF
        from torchvision import transforms
        import torchaudio
        import torchaudio.transforms, torchaudio.functional
        from torchaudio.compliance.kaldi import fbank
        import importlib
        deep = importlib.import_module("torchvision.any.depth.of.submodule")
        result = {"stubbed": list(stubbed), "deep": deep.__name__,
                  "half_initialised_left": "torchvision._C" in sys.modules and
                                           hasattr(sys.modules["torchvision._C"], "LOADED"),
                  "again": list(stubs.install_where_missing())}
        """, {"torchvision": BROKEN})  # torchaudio: absent (ModuleNotFoundError)
    assert result["stubbed"] == list(STUBBED_ROOTS) == result["again"]
    assert result["deep"] == "torchvision.any.depth.of.submodule"
    assert not result["half_initialised_left"]   # what the failed import left was dropped


def test_every_use_fails_loudly(tmp_path):
    result = run_isolated(tmp_path, """
        from tools import stubs
        stubs.install_where_missing()
        import torch, torchaudio, torchvision.transforms.functional as TF
        from torchvision.ops import roi_align
        uses = {
            "call": lambda: roi_align(torch.zeros(1, 1, 4, 4), [], 2),
            "call_chain": lambda: TF.InterpolationMode.BICUBIC.value.lower(),
            "subclass": lambda: exec("class Resampler(torchaudio.transforms.Resample): pass", {"torchaudio": torchaudio}),
            "truth": lambda: bool(torchaudio.functional.resample),
            "arithmetic": lambda: torchvision.ops.boxes.box_area + 1,
            "iterate": lambda: list(torchaudio.list_audio_backends),
            "set": lambda: setattr(TF.resize, "x", 1),
        }
        import torchvision
        result = {}
        for name, use in uses.items():
            try:
                use()
                result[name] = None
            except stubs.StubbedModuleUsed as error:
                result[name] = str(error)
        """, {"torchvision": BROKEN})
    for name, message in result.items():
        assert message is not None, f"{name}: using a stub did not raise"
        assert "is stubbed out in the test harness" in message, message
    assert "torchvision.ops.roi_align was called" in result["call"]
    assert "simulated build that cannot load" in result["call"]          # says why the real one is not used
    assert "ModuleNotFoundError" in result["subclass"] and "Resample was subclassed" in result["subclass"]


def test_a_real_package_is_never_masked(tmp_path):
    result = run_isolated(tmp_path, """
        from tools import stubs
        stubbed = stubs.install_where_missing()
        import torchvision, importlib
        from torchvision.ops import roi_align
        try:
            importlib.import_module("torchvision.not_in_the_real_package")
            missing_submodule = "stubbed"
        except ModuleNotFoundError:
            missing_submodule = "ModuleNotFoundError"
        import torchaudio.transforms
        result = {"stubbed": list(stubbed), "real": getattr(torchvision, "REAL", False),
                  "roi_align": roi_align(), "missing_submodule": missing_submodule,
                  "torchaudio": type(torchaudio).__name__}
        """, {"torchvision": WORKING})
    assert result["stubbed"] == ["torchaudio"]     # only the one that failed
    assert result["real"] and result["roi_align"] == "real roi_align"
    assert result["missing_submodule"] == "ModuleNotFoundError"   # the real package's own answer
    assert result["torchaudio"] == "StubModule"


def optional_imports(comfy_dir: Path) -> list[str]:
    """Every import statement of torchvision/torchaudio in the ComfyUI tree, as source."""
    statements = set()
    for path in comfy_dir.rglob("*.py"):
        if "custom_nodes" in path.parts or "tests" in path.parts:
            continue
        try:
            tree = ast.parse(path.read_text(errors="replace"))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            if any(n.partition(".")[0] in STUBBED_ROOTS for n in names):
                statements.add(ast.unparse(node))
    return sorted(statements)


@pytest.mark.comfy
def test_every_optional_import_in_the_running_comfyui_succeeds(tmp_path):
    statements = optional_imports(find_comfyui_dir())
    assert statements, "expected ComfyUI to import torchvision/torchaudio somewhere"
    result = run_isolated(tmp_path, f"""
        from tools import stubs
        stubs.install_where_missing()
        failed = {{}}
        for statement in {statements!r}:
            try:
                exec(statement, {{}})
            except Exception as error:
                failed[statement] = repr(error)
        result = failed
        """, {})
    assert result == {}


# ComfyUI modules whose API changed between the versions the suite runs on: only the seam
# (tools/comfyui_runtime.py) imports them; everything else goes through it.
SEAM_ONLY_MODULES = {"execution", "server", "main", "folder_paths", "comfyui_version",
                     "comfy.cli_args", "comfy.model_patcher", "comfy.patcher_extension"}
SEAM = PACK_DIR / "tools" / "comfyui_runtime.py"


def imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module)
            modules |= {f"{node.module}.{a.name}" for a in node.names}
    return modules


def test_only_the_seam_imports_version_specific_comfyui_modules():
    sources = sorted((PACK_DIR / "tests").glob("*.py")) + sorted((PACK_DIR / "bench").glob("*.py"))
    sources += [p for p in (PACK_DIR / "tools").glob("*.py") if p != SEAM]
    reaches = {p.relative_to(PACK_DIR).as_posix(): sorted(imported_modules(p) & SEAM_ONLY_MODULES)
               for p in sources}
    assert {path: mods for path, mods in reaches.items() if mods} == {}
    assert imported_modules(SEAM) & SEAM_ONLY_MODULES   # the rule names what the seam really uses
