"""How the pack registers in a real ComfyUI: sampler lists, the node's schema, metadata files."""
import asyncio
import json
import logging
import sys
import tomllib

import pytest

import comfy_harness as h
from tools.comfyui_runtime import PACK_DIR

pytestmark = pytest.mark.comfy


def combo_options(node_class, input_name):
    """The options a node offers for a combo input, as /object_info builds them (V1 or V3)."""
    spec = node_class.INPUT_TYPES()["required"][input_name]
    return spec[0] if isinstance(spec[0], list) else spec[1]["options"]


@pytest.mark.parametrize("node_id", ["KSampler", "KSamplerAdvanced", "KSamplerSelect"])
def test_evodiff_is_offered_by_the_core_sampler_nodes(comfyui, node_id):
    options = combo_options(comfyui.nodes.NODE_CLASS_MAPPINGS[node_id], "sampler_name")
    assert options.count("evodiff") == 1
    assert options[0] != "evodiff"  # SAMPLERS[0] is KSampler's fallback for unknown names


def test_registration_targets(comfyui):
    import comfy.k_diffusion.sampling
    import comfy.samplers

    assert comfy.samplers.KSAMPLER_NAMES.count("evodiff") == 1
    assert comfy.samplers.SAMPLER_NAMES.count("evodiff") == 1
    assert comfy.samplers.KSampler.SAMPLERS is comfy.samplers.SAMPLER_NAMES
    function = comfy.k_diffusion.sampling.sample_evodiff
    assert getattr(function, "evodiff_pack", False)
    assert comfy.samplers.ksampler("evodiff").sampler_function is function


def test_loading_the_pack_twice_changes_nothing(comfyui):
    import comfy.k_diffusion.sampling
    import comfy.samplers

    before = (list(comfy.samplers.KSAMPLER_NAMES), list(comfy.samplers.SAMPLER_NAMES),
              comfy.k_diffusion.sampling.sample_evodiff, comfy.samplers.SAMPLER_NAMES,
              comfy.samplers.KSAMPLER_NAMES)
    node_before = comfyui.nodes.NODE_CLASS_MAPPINGS[h.SAMPLER_NODE]
    assert asyncio.run(comfyui.nodes.load_custom_node(str(PACK_DIR)))
    after = (list(comfy.samplers.KSAMPLER_NAMES), list(comfy.samplers.SAMPLER_NAMES),
             comfy.k_diffusion.sampling.sample_evodiff, comfy.samplers.SAMPLER_NAMES,
             comfy.samplers.KSAMPLER_NAMES)
    assert after[:2] == before[:2]
    assert all(a is b for a, b in zip(after[2:], before[2:]))  # same function, lists never rebound
    assert comfyui.nodes.NODE_CLASS_MAPPINGS[h.SAMPLER_NODE].define_schema().node_id == \
        node_before.define_schema().node_id


@pytest.fixture
def registration():
    return sys.modules[f"{h.load_name()}.nodes.registration"]


def test_a_sample_evodiff_from_another_pack_is_left_in_place(comfyui, registration, monkeypatch, caplog):
    import comfy.k_diffusion.sampling

    def other_packs_sampler(model, x, sigmas, extra_args=None, callback=None, disable=None):
        return x

    monkeypatch.setattr(comfy.k_diffusion.sampling, "sample_evodiff", other_packs_sampler)
    with caplog.at_level(logging.WARNING):
        registration.register_evodiff_sampler()
    assert comfy.k_diffusion.sampling.sample_evodiff is other_packs_sampler
    warnings = [r for r in caplog.records if "already registered" in r.getMessage()]
    assert len(warnings) == 1 and "other_packs_sampler" in warnings[0].getMessage()


def test_other_packs_extending_or_replacing_the_lists_do_not_break_evodiff(comfyui, registration, monkeypatch):
    import comfy.samplers

    # Another pack inserts its names before ours, then rebinds the lists to new copies.
    names = comfy.samplers.SAMPLER_NAMES
    monkeypatch.setattr(comfy.samplers, "SAMPLER_NAMES", ["other_a"] + list(names) + ["other_b"])
    monkeypatch.setattr(comfy.samplers.KSampler, "SAMPLERS", comfy.samplers.SAMPLER_NAMES)
    monkeypatch.setattr(comfy.samplers, "KSAMPLER_NAMES", list(comfy.samplers.KSAMPLER_NAMES))
    registration.register_evodiff_sampler()  # e.g. a second copy of this pack loading later
    assert comfy.samplers.SAMPLER_NAMES.count("evodiff") == 1
    assert combo_options(comfyui.nodes.NODE_CLASS_MAPPINGS["KSampler"], "sampler_name").count("evodiff") == 1
    from test_comfy_sampling import ksampler_prompt
    out = h.run_and_capture(comfyui, ksampler_prompt("sd15", steps=3))
    assert out.isfinite().all()


def test_sampler_node_schema(comfyui):
    import evodiff_core

    node = comfyui.nodes.NODE_CLASS_MAPPINGS[h.SAMPLER_NODE]
    schema = node.define_schema()
    assert schema.node_id == "SamplerEVODiff"
    assert schema.category == "sampling/custom_sampling/samplers"
    assert "EVODiff" in schema.description
    assert [o.io_type for o in schema.outputs] == ["SAMPLER"]
    inputs = {i.id: i for i in schema.inputs}
    shift = inputs["shift"]
    assert (shift.default, shift.min, shift.max) == (0.5, evodiff_core.SHIFT_MIN, evodiff_core.SHIFT_MAX)
    assert 0 < shift.step <= 0.05
    # a tooltip says what the value does in plain words (the maths is in the help page)
    assert "Euler" in shift.tooltip and "ModelSamplingSD3" in shift.tooltip
    assert len(shift.tooltip) < 250 and not set("μζ*|−") & set(shift.tooltip)
    assert inputs["variant"].options == list(evodiff_core.VARIANTS)
    assert inputs["variant"].default == evodiff_core.VARIANTS[0]
    assert inputs["noise_schedule"].options == ["auto", *evodiff_core.NOISE_SCHEDULES]
    assert all(i.tooltip for i in schema.inputs)
    # V1 view (what /object_info serves) comes out of the same schema in this ComfyUI.
    v1 = node.INPUT_TYPES()["required"]
    assert list(v1) == ["shift", "variant", "noise_schedule"]


def test_node_ids_do_not_collide_and_node_list_json_matches(comfyui):
    from comfy_api.latest import ComfyExtension

    module = sys.modules[h.load_name()]
    assert not hasattr(module, "NODE_CLASS_MAPPINGS")  # else ComfyUI would ignore comfy_entrypoint
    extension = asyncio.run(module.comfy_entrypoint())
    assert isinstance(extension, ComfyExtension)
    node_ids = [n.define_schema().node_id for n in asyncio.run(extension.get_node_list())]
    node_list = json.loads((PACK_DIR / "node_list.json").read_text())
    assert sorted(node_list) == sorted(node_ids)
    assert all(isinstance(text, str) and text for text in node_list.values())
    for node_id in node_ids:  # the registered class is ours, not a core node of the same id
        assert comfyui.nodes.NODE_CLASS_MAPPINGS[node_id].__module__.startswith(h.load_name())


def test_pack_module_names_do_not_shadow_comfyui_modules(comfyui):
    comfy_modules = {p.stem for p in (comfyui.comfy_dir / "comfy").glob("*.py")}
    comfy_modules |= {p.stem for p in comfyui.comfy_dir.glob("*.py")} - {"nodes"}
    ours = {p.stem for p in (PACK_DIR / "nodes").glob("*.py")} | {"evodiff_core"}
    assert not ours & comfy_modules


def test_help_page_and_web_directory(comfyui):
    module = sys.modules[h.load_name()]
    web = PACK_DIR / module.WEB_DIRECTORY
    # the frontend asks for docs/<node>/<locale>.md, then docs/<node>.md (the other locales')
    page = (web / "docs" / h.SAMPLER_NODE / "en.md").read_text()
    assert (web / "docs" / f"{h.SAMPLER_NODE}.md").read_text() == page
    assert "shift" in page and "ModelSamplingSD3" in page
    assert "\n|" not in page  # no tables: the help panel is about 270 px wide
    assert comfyui.nodes.EXTENSION_WEB_DIRS.get(comfyui.nodes.get_module_name(str(PACK_DIR))) == str(web.resolve())


def test_pyproject_registry_metadata():
    project = tomllib.loads((PACK_DIR / "pyproject.toml").read_text())
    meta, comfy_meta = project["project"], project["tool"]["comfy"]
    assert meta["name"] == meta["name"].lower() and "comfyui" not in meta["name"]
    major, minor, patch = (int(p) for p in meta["version"].split("."))
    assert meta["urls"]["Repository"].startswith("https://github.com/")
    assert (PACK_DIR / "LICENSE").read_text().startswith("                    GNU GENERAL PUBLIC LICENSE")
    assert comfy_meta["PublisherId"] and comfy_meta["DisplayName"] and comfy_meta["Icon"].startswith("https://")
    spec = comfy_meta["requires-comfyui"]
    from packaging.specifiers import SpecifierSet  # pip's vendored copy is not importable; packaging is
    assert all(v in SpecifierSet(spec) for v in ("0.3.64", "0.3.75", "0.38.1"))


def test_comfyui_own_config_parser_reads_the_pyproject(comfyui):
    pytest.importorskip("pydantic_settings")
    from comfy_config import config_parser

    config = config_parser.extract_node_configuration(str(PACK_DIR))
    assert config is not None
    assert config.project.name == "evodiff-sampler"
    assert config.project.license.file == "LICENSE"
    assert config.project.urls.repository.startswith("https://github.com/")
    assert config.tool_comfy.publisher_id and config.tool_comfy.display_name and config.tool_comfy.icon
    assert config.project.supported_comfyui_version == ">=0.3.64"
    # comfy_config drops the whole accelerator (or OS) list if one entry is unknown
    classifiers = tomllib.loads((PACK_DIR / "pyproject.toml").read_text())["project"]["classifiers"]
    accelerators = [c.removeprefix("Environment :: ") for c in classifiers if c.startswith("Environment ::")]
    systems = [c.removeprefix("Operating System :: ") for c in classifiers if c.startswith("Operating System :: ")]
    assert accelerators and config.project.supported_accelerators == accelerators
    assert systems and config.project.supported_os == systems
