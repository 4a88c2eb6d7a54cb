"""What the Registry and the Manager read: classifiers, icon, archive contents, workflow thumbnails and notes."""
import json
import shutil
import subprocess
import tomllib

import pytest

from tools import thumbnails
from tools.comfyui_runtime import PACK_DIR

PYPROJECT = tomllib.loads((PACK_DIR / "pyproject.toml").read_text())
WORKFLOW_PATHS = sorted((PACK_DIR / "example_workflows").glob("*.json"))


def test_icon_is_a_square_image_of_at_most_400_px_in_the_repository():
    from PIL import Image

    url = PYPROJECT["tool"]["comfy"]["Icon"]
    repository = PYPROJECT["project"]["urls"]["Repository"].removeprefix("https://github.com/")
    prefix = f"https://raw.githubusercontent.com/{repository}/main/"
    assert url.startswith(prefix), url
    width, height = Image.open(PACK_DIR / url.removeprefix(prefix)).size
    assert width == height <= 400


def _git_files(*args) -> set[str]:
    if shutil.which("git") is None or not (PACK_DIR / ".git").exists():
        pytest.skip("needs a git checkout")
    listing = subprocess.run(["git", "ls-files", "--cached", *args], cwd=PACK_DIR, check=True,
                             capture_output=True, text=True).stdout
    return {f for f in listing.split() if (PACK_DIR / f).is_file()}  # not files deleted but still staged


def test_comfyignore_keeps_development_files_out_of_the_registry_archive():
    """The archive is the tracked files minus .comfyignore (gitignore syntax, as git reads it)."""
    ignored = _git_files("--ignored", "--exclude-from=.comfyignore")
    shipped = _git_files() - ignored
    assert any(f.startswith("tests/data/golden/") for f in ignored)
    assert {f for f in _git_files() if f.startswith(("tests/", "bench/", "docs/")) and
            f.endswith((".safetensors", ".png", ".jpg", ".py"))} <= ignored
    runtime = {"__init__.py", "pyproject.toml", "node_list.json", "LICENSE", "README.md"}
    runtime |= {f for f in _git_files() if f.startswith(("nodes/", "evodiff_core/", "web/", "example_workflows/"))}
    assert runtime <= shipped
    assert sum((PACK_DIR / f).stat().st_size for f in shipped) < 1_000_000


@pytest.mark.parametrize("path", WORKFLOW_PATHS, ids=lambda p: p.stem)
def test_thumbnail_shows_the_settings_of_its_workflow(path, tmp_path):
    """A fresh render from the workflow's own widgets looks like the shipped .jpg."""
    import numpy as np
    from PIL import Image

    copy = tmp_path / path.name
    copy.write_text(path.read_text())
    fresh = np.asarray(Image.open(thumbnails.render_thumbnail(copy)).convert("L"), dtype=float)
    shipped = np.asarray(Image.open(path.with_suffix(".jpg")).convert("L"), dtype=float)
    assert shipped.shape == fresh.shape == thumbnails.THUMBNAIL_SIZE[::-1]
    assert np.abs(fresh - shipped).mean() < 1.0  # JPEG noise only; a changed word moves far more


def test_thumbnail_text_follows_the_workflow():
    workflow = json.loads((PACK_DIR / "example_workflows" / "EVODiff 2 - SDXL with SamplerCustomAdvanced.json")
                          .read_text())
    (node,) = [n for n in workflow["nodes"] if n["type"] == "SamplerEVODiff"]
    for variant in ("improved", "reference"):
        node["widgets_values"][1] = variant
        assert f"variant {variant}" in thumbnails.settings_lines(workflow)[0]


@pytest.mark.parametrize("path", WORKFLOW_PATHS, ids=lambda p: p.stem)
def test_workflow_without_the_pack_node_says_to_install_the_pack_by_hand(path):
    """A bare "evodiff" in a core KSampler records no pack, so the Manager cannot find it."""
    workflow = json.loads(path.read_text())
    records_pack = any(n.get("properties", {}).get("cnr_id") == PYPROJECT["project"]["name"]
                       for n in workflow["nodes"])
    (note,) = [n["widgets_values"][0] for n in workflow["nodes"] if n["type"] == "Note"]
    if records_pack:
        assert "Install Missing Custom Nodes" in note and "finds it" in note
    else:
        assert "BY HAND" in note and "cannot find it" in note


def _recommended_steps(markdown: str) -> dict[str, str]:
    """Model family → the steps range in its line of the 'Which settings' table or list."""
    import re

    rows = {"SD1.5": "eps", "SD3": "flow", "Two stages": "two-stage"}
    found = {}
    for line in markdown.splitlines():
        for start, family in rows.items():
            if line.lstrip("|-* ").startswith(start):
                found[family] = "-".join(re.search(r"(\d+)–(\d+)", line).groups())
    return found


def test_recommended_steps_agree_in_readme_help_page_and_workflow_notes():
    readme = _recommended_steps((PACK_DIR / "README.md").read_text())
    help_page = _recommended_steps((PACK_DIR / "web" / "docs" / "SamplerEVODiff" / "en.md").read_text())
    assert readme == help_page and set(readme) == {"eps", "flow", "two-stage"}
    # a calibrated schedule is for few steps: the range EVODiffCalibrate's help page gives
    calibrate_page = (PACK_DIR / "web" / "docs" / "EVODiffCalibrate.md").read_text()
    assert "It pays most at 5–8" in calibrate_page
    readme["calibrated"] = "5-8"
    family_of = {"EVODiff 1 - SD1.5 with KSampler": "eps", "EVODiff 2 - SDXL with SamplerCustomAdvanced": "eps",
                 "EVODiff 3 - SD3.5 flow matching": "flow", "EVODiff 4 - SDXL base and refiner": "two-stage",
                 "EVODiff 5 - SDXL with a calibrated schedule": "calibrated"}
    assert set(family_of) == {p.stem for p in WORKFLOW_PATHS}
    for path in WORKFLOW_PATHS:
        (note,) = [n["widgets_values"][0] for n in json.loads(path.read_text())["nodes"] if n["type"] == "Note"]
        assert f"{readme[family_of[path.stem]]} steps" in note, path.stem


def test_every_relative_link_in_the_markdown_resolves():
    import re

    pages = [*PACK_DIR.glob("*.md"), *(PACK_DIR / "docs").glob("*.md"), *(PACK_DIR / "web" / "docs").glob("*.md")]
    broken = [(page.name, link) for page in pages
              for link in re.findall(r"\]\(([^)#\s]+)", page.read_text())
              if not link.startswith(("http://", "https://")) and not (page.parent / link).exists()]
    assert len(pages) >= 8 and not broken


# What the frontend draws beyond a node's stored pos/size: its title bar above pos, and for a
# custom node its pack badge above the title bar (at the default badge setting).
TITLE_HEIGHT, BADGE_HEIGHT = 30, 20


def _drawn_box(node: dict) -> tuple[float, float, float, float]:
    (x, y), (width, height) = node["pos"], node["size"]
    badge = BADGE_HEIGHT if node.get("properties", {}).get("cnr_id") not in (None, "comfy-core") else 0
    return x, y - TITLE_HEIGHT - badge, x + width, y + height


def overlapping_nodes(workflow: dict) -> list[tuple[str, str]]:
    """Pairs of nodes whose drawn boxes (title bar and badge included) overlap."""
    import itertools

    pairs = []
    for a, b in itertools.combinations(workflow["nodes"], 2):
        (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = _drawn_box(a), _drawn_box(b)
        if ax0 < bx1 and bx0 < ax1 and ay0 < by1 and by0 < ay1:
            pairs.append((f"{a['id']} {a['type']}", f"{b['id']} {b['type']}"))
    return pairs


@pytest.mark.parametrize("path", WORKFLOW_PATHS, ids=lambda p: p.stem)
def test_no_node_of_a_template_covers_another(path):
    assert overlapping_nodes(json.loads(path.read_text())) == []


def test_the_overlap_check_sees_a_note_over_a_title_bar_and_a_badge_over_a_node():
    loader = {"id": 1, "type": "CheckpointLoaderSimple", "pos": [20, 560], "size": [340, 100],
              "properties": {"cnr_id": "comfy-core"}}
    note = {"id": 2, "type": "Note", "pos": [20, 200], "size": [360, 350]}   # ends 10 px into the title
    above = {"id": 3, "type": "RandomNoise", "pos": [20, 800], "size": [270, 85]}
    ours = {"id": 4, "type": "SamplerEVODiff", "pos": [20, 930], "size": [300, 110],
            "properties": {"cnr_id": "evodiff-sampler"}}   # title clears it by 15 px, the badge does not
    assert overlapping_nodes({"nodes": [loader, note, above, ours]}) == [
        ("1 CheckpointLoaderSimple", "2 Note"), ("3 RandomNoise", "4 SamplerEVODiff")]


def test_template_names_read_as_titles_in_the_readme_order():
    """The frontend titles a pack's templates by file name; A→Z must give the README's order."""
    import re

    readme = (PACK_DIR / "README.md").read_text()
    listed = re.findall(r"^\| `([^`]+)` \|", readme.split("**Example workflows:**")[1], flags=re.M)
    assert listed == [p.stem for p in WORKFLOW_PATHS]   # sorted by name
    assert all(re.fullmatch(r"EVODiff \d - [A-Za-z0-9.,+ ]+", name) for name in listed), listed
