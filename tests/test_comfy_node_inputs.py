"""A bad SamplerEVODiff widget value is refused when the prompt is queued: one error, on the
input that is wrong, on the SamplerEVODiff node.

ComfyUI before 0.8 does not check V3 combo values, and a validate_inputs() has its one message
copied to every input it takes (three errors for one bad value); the pack declares its lists so
that every ComfyUI checks them itself.
"""
import pytest

import comfy_harness as h
from test_comfy_sampling import custom_advanced_prompt

pytestmark = pytest.mark.comfy


def sampler_node_prompt(**inputs) -> dict:
    """A SamplerCustomAdvanced prompt whose SamplerEVODiff has these widget values."""
    return custom_advanced_prompt("sd15", steps=3, **inputs)


def the_one_error(comfyui, prompt) -> dict:
    """The only validation error of the prompt, which must be on the SamplerEVODiff node."""
    ok, _, _, node_errors = h.validate(comfyui, prompt)
    assert not ok
    assert set(node_errors) == {"evodiff"}, node_errors  # blamed on our node, not on the sampling node
    assert node_errors["evodiff"]["class_type"] == h.SAMPLER_NODE
    errors = node_errors["evodiff"]["errors"]
    assert len(errors) == 1, errors
    return errors[0]


def test_default_widgets_validate(comfyui):
    ok, error, _, node_errors = h.validate(comfyui, sampler_node_prompt())
    assert ok, (error, node_errors)


@pytest.mark.parametrize("inputs, words", [
    ({"variant": "bogus"}, ["'bogus'", "improved", "reference"]),
    ({"noise_schedule": "vp"}, ["'vp'", "auto", "flow", "ve"]),
    ({"shift": 5.0}, ["5.0", "max of 2.0"]),
    ({"shift": -0.1}, ["-0.1", "min of 0.0"]),
], ids=["variant", "noise_schedule", "shift-high", "shift-negative"])
def test_bad_widget_value_gives_one_error_on_that_input_at_queue_time(comfyui, inputs, words):
    [name] = inputs
    error = the_one_error(comfyui, sampler_node_prompt(**inputs))
    assert error["extra_info"]["input_name"] == name
    text = f"{error['message']} {error['details']}"
    for word in words:
        assert word in text, (word, text)


def test_two_bad_values_give_one_error_each(comfyui):
    ok, _, _, node_errors = h.validate(comfyui, sampler_node_prompt(variant="bogus", shift=9.0))
    assert not ok
    errors = node_errors["evodiff"]["errors"]
    assert sorted(e["extra_info"]["input_name"] for e in errors) == ["shift", "variant"], errors


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
