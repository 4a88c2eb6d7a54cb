"""SamplerEVODiff checks its own widget values when a prompt is queued, and names itself.

ComfyUI 0.3.x does not check V3 combo values, so without this a bad value reached the sampler
and failed at sampling time, blamed on SamplerCustomAdvanced.
"""
import pytest

import comfy_harness as h
from test_comfy_sampling import custom_advanced_prompt

pytestmark = pytest.mark.comfy


def sampler_node_prompt(**inputs) -> dict:
    """A SamplerCustomAdvanced prompt whose SamplerEVODiff has these widget values."""
    return custom_advanced_prompt("sd15", steps=3, **inputs)


def node_error_text(comfyui, prompt) -> str:
    ok, _, _, node_errors = h.validate(comfyui, prompt)
    assert not ok
    assert set(node_errors) == {"evodiff"}, node_errors  # blamed on our node, not on the sampling node
    return " ".join(e["details"] for e in node_errors["evodiff"]["errors"])


def test_default_widgets_validate(comfyui):
    ok, error, _, node_errors = h.validate(comfyui, sampler_node_prompt())
    assert ok, (error, node_errors)


@pytest.mark.parametrize("inputs, words", [
    ({"variant": "bogus"}, ["variant 'bogus'", "improved", "reference"]),
    ({"noise_schedule": "vp"}, ["noise_schedule", "'vp'", "flow"]),
    ({"shift": 5.0}, ["shift", "[0.0, 2.0]", "5.0"]),
    ({"shift": -0.1}, ["shift", "-0.1"]),
], ids=["variant", "noise_schedule", "shift-high", "shift-negative"])
def test_bad_widget_value_is_rejected_at_queue_time_naming_the_node(comfyui, inputs, words):
    text = node_error_text(comfyui, sampler_node_prompt(**inputs))
    assert text.count(h.SAMPLER_NODE) >= 1
    for word in words:
        assert word in text, (word, text)


def test_execute_without_validation_also_refuses_naming_the_node(comfyui):
    node_class = comfyui.nodes.NODE_CLASS_MAPPINGS[h.SAMPLER_NODE]
    with pytest.raises(ValueError, match=rf"^{h.SAMPLER_NODE}: unknown variant 'bogus'"):
        node_class.execute(shift=0.5, variant="bogus", noise_schedule="auto")


def test_node_info_carries_the_newer_schema_fields_only_where_comfyui_has_them(comfyui):
    """0.33+ sends search_aliases and per-input `advanced` to the frontend; 0.3.x has neither
    field, and passing them there would raise."""
    from comfy_api.latest import io

    node_class = comfyui.nodes.NODE_CLASS_MAPPINGS[h.SAMPLER_NODE]
    info = node_class.GET_NODE_INFO_V1()
    inputs = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
    if "search_aliases" in getattr(io.Schema, "__dataclass_fields__", {}):
        assert {"variance", "entropy", "fast sampler", "low steps"} <= set(info["search_aliases"])
        assert inputs["noise_schedule"][1].get("advanced") is True
        assert not inputs["shift"][1].get("advanced")  # the one widget users are meant to touch
    else:
        assert not info.get("search_aliases")
        assert "advanced" not in inputs["noise_schedule"][1]
