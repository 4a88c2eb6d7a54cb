"""Every example workflow loads in the booted ComfyUI, has valid widget values, and runs.

The UI-format graph (litegraph "version": 0.4) is converted to API format the way the frontend
does it (widgets_values in input order, plus the extra 'control after generate' value), then the
model loaders and text encoders are swapped for the tiny test models before it is executed.
"""
import json
import uuid

import pytest

import comfy_harness as h
from tools.comfyui_runtime import PACK_DIR

pytestmark = pytest.mark.comfy

WORKFLOW_DIR = PACK_DIR / "example_workflows"
WORKFLOWS = sorted(WORKFLOW_DIR.glob("*.json"))
UI_ONLY_NODES = {"Note", "MarkdownNote"}  # frontend-only; never sent to the server
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
MODEL_FILE_INPUTS = {"ckpt_name", "unet_name", "vae_name", "clip_name", "clip_name1", "clip_name2", "clip_name3"}
FAMILY = {"EVODiff 3 - SD3.5 flow matching.json": "sd3"}  # which tiny model stands in; SD1.5 otherwise


def input_specs(node_class):
    types = node_class.INPUT_TYPES()
    return [item for section in ("required", "optional") for item in types.get(section, {}).items()]


def is_widget(spec):
    return isinstance(spec[0], list) or spec[0] in WIDGET_TYPES


def options_of(spec):
    return spec[0] if isinstance(spec[0], list) else spec[1].get("options")


def widget_inputs(node, node_class):
    """{input name: value} from widgets_values, in the order the frontend writes them."""
    values = list(node["widgets_values"])
    named = {}
    for name, spec in input_specs(node_class):
        if not is_widget(spec):
            continue
        named[name] = values.pop(0)
        if len(spec) > 1 and spec[1].get("control_after_generate"):
            assert values.pop(0) in ("fixed", "increment", "decrement", "randomize")
    assert not values, f"{node['type']}: {len(values)} widget values left over"
    return named


def to_api(workflow, mappings):
    links = {link[0]: link for link in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
        if node["type"] in UI_ONLY_NODES or node.get("mode", 0) != 0:
            continue
        inputs = widget_inputs(node, mappings[node["type"]])
        for socket in node.get("inputs", []):
            if socket.get("link") is not None:
                _, origin, slot, *_ = links[socket["link"]]
                inputs[socket["name"]] = [str(origin), slot]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


def with_tiny_models(prompt, family):
    """Swap checkpoints, text encoders and latent sizes for the tiny test models (64x64 px)."""
    unet_file, vae_file = h.MODEL_FILES[family]
    for node_id, node in prompt.items():
        kind, inputs = node["class_type"], node["inputs"]
        if kind == "CheckpointLoaderSimple":
            prompt[node_id] = {"class_type": "EVODiffTestCheckpoint", "inputs": {"family": family}}
        elif kind in ("CLIPLoader", "DualCLIPLoader", "TripleCLIPLoader"):
            prompt[node_id] = {"class_type": "EVODiffTestCLIP", "inputs": {}}
        elif kind.startswith("CLIPTextEncode"):
            prompt[node_id] = {"class_type": "EVODiffTestConditioning", "inputs": {"family": family, "seed": int(node_id)}}
        elif kind == "UNETLoader":
            inputs["unet_name"] = unet_file
        elif kind == "VAELoader":
            inputs["vae_name"] = vae_file
        elif "width" in inputs and "height" in inputs:
            inputs["width"] = inputs["height"] = 64
    return prompt


@pytest.fixture(scope="module")
def mappings(comfyui):
    return comfyui.nodes.NODE_CLASS_MAPPINGS


def test_there_are_five_workflows_each_with_a_thumbnail():
    assert len(WORKFLOWS) == 5
    for path in WORKFLOWS:
        assert path.with_suffix(".jpg").is_file(), path.name


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_format_and_widget_values(path, mappings):
    workflow = json.loads(path.read_text())
    assert workflow["version"] == 0.4
    uuid.UUID(workflow["id"])  # the frontend's schema check alerts "Invalid uuid at 'id'" otherwise
    types = [n["type"] for n in workflow["nodes"]]
    assert any(t in UI_ONLY_NODES for t in types), "each example carries a note"
    for node in workflow["nodes"]:
        if node["type"] in UI_ONLY_NODES:
            continue
        assert node["type"] in mappings, f"{path.name}: unknown node type {node['type']}"
        specs = dict(input_specs(mappings[node["type"]]))
        for name, value in widget_inputs(node, mappings[node["type"]]).items():
            spec = specs[name]
            options = options_of(spec)
            if name in MODEL_FILE_INPUTS:
                assert isinstance(value, str) and value.endswith(".safetensors")
            elif options is not None:
                assert value in options, f"{path.name}: {node['type']}.{name}={value!r} not in {options}"
            elif spec[0] in ("INT", "FLOAT"):
                limits = spec[1] if len(spec) > 1 else {}
                assert isinstance(value, (int, float)) and not isinstance(value, bool)
                assert limits.get("min", value) <= value <= limits.get("max", value), (node["type"], name, value)
            elif spec[0] == "BOOLEAN":
                assert isinstance(value, bool)
            else:
                assert isinstance(value, str)
    # SamplerEVODiff, EVODiffCalibrate's SAMPLER, or "evodiff" in a sampler_name list
    uses_evodiff = [n for n in workflow["nodes"] if n["type"] in (h.SAMPLER_NODE, "EVODiffCalibrate")
                    or "evodiff" in (n.get("widgets_values") or [])]
    assert uses_evodiff, "the workflow must use EVODiff"
    for node in workflow["nodes"]:
        if node["type"] == h.SAMPLER_NODE:
            assert node["properties"]["cnr_id"] == "evodiff-sampler"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_validates_and_runs_with_tiny_models(path, comfyui, mappings):
    prompt = with_tiny_models(to_api(json.loads(path.read_text()), mappings), FAMILY.get(path.name, "sd15"))
    executor = h.run_prompt(comfyui, prompt)
    assert h.execution_error(executor) is None, h.execution_error(executor)
    saved = [event for event, data in executor.status_messages if event == "execution_success"]
    assert saved, executor.status_messages
    assert list((comfyui.work_dir / "output").glob("evodiff_*.png"))


def test_sampler_node_widget_order_is_stable(mappings):
    """Saved workflows store widgets by position: shift, variant, noise_schedule. Never reorder."""
    names = [name for name, spec in input_specs(mappings[h.SAMPLER_NODE]) if is_widget(spec)]
    assert names == ["shift", "variant", "noise_schedule"]
