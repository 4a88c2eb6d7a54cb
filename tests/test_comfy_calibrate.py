"""EVODiffCalibrate inside a real ComfyUI: its SIGMAS drive SamplerCustomAdvanced, the saved
schedule is reused without a model call, bad widget values are refused naming the node, and an
interrupt stops it."""
import json

import pytest
import torch

import comfy_harness as h
from test_comfy_sampling import custom_advanced_prompt, pack_module
from tools.comfyui_runtime import progress_hook, set_user_directory

pytestmark = pytest.mark.comfy

NODE = "EVODiffCalibrate"
TEST_BUDGET = 160   # model calls per calibration: the teacher, the stock schedules and a short polish


def calibrated_prompt(family="sd15", steps=4, samples=2, seed=3, cfg=3.0, width=64):
    """SamplerCustomAdvanced whose SIGMAS and SAMPLER come from EVODiffCalibrate instead of
    BasicScheduler and SamplerEVODiff."""
    prompt = custom_advanced_prompt(family, steps=steps, cfg=cfg)
    prompt["latent"]["inputs"]["width"] = width
    prompt["sigmas"] = {"class_type": NODE, "inputs": {
        "model": ["model", 0], "positive": ["pos", 0], "negative": ["neg", 0], "cfg": cfg,
        "latent": ["latent", 0], "steps": steps, "samples": samples, "seed": seed}}
    prompt["sample"]["inputs"]["sampler"] = ["sigmas", 1]
    prompt["capture_sigmas"] = {"class_type": "EVODiffTestCaptureSigmas",
                                "inputs": {"sigmas": ["sigmas", 0], "sampler": ["sigmas", 1]}}
    return prompt


class EVODiffTestCaptureSigmas:
    """Output node that keeps the SIGMAS it receives in CAPTURED['sigmas'], and the SAMPLER's
    options in CAPTURED['sampler_options']."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"sigmas": ("SIGMAS",)}, "optional": {"sampler": ("SAMPLER",)}}

    RETURN_TYPES = ()
    FUNCTION = "capture"
    OUTPUT_NODE = True
    CATEGORY = "_evodiff_test"

    def capture(self, sigmas, sampler=None):
        h.CAPTURED["sigmas"] = sigmas.clone()
        h.CAPTURED["sampler_options"] = dict(getattr(sampler, "extra_options", {}))
        return {}


@pytest.fixture
def runtime(comfyui, tmp_path, monkeypatch):
    """The booted ComfyUI with a fresh user directory (so nothing is saved from an earlier test),
    the sigma capture node, a counter of the diffusion model's calls, and a smaller call budget
    (the method is the same; the tests only get faster)."""
    import comfy.model_base

    monkeypatch.setattr(pack_module(comfyui, "calibrate_node"), "default_max_calls", lambda steps: TEST_BUDGET)

    monkeypatch.setitem(comfyui.nodes.NODE_CLASS_MAPPINGS, "EVODiffTestCaptureSigmas", EVODiffTestCaptureSigmas)
    calls = []
    real_apply = comfy.model_base.BaseModel.apply_model

    def counting_apply(self, *args, **kwargs):
        calls.append(1)
        return real_apply(self, *args, **kwargs)

    monkeypatch.setattr(comfy.model_base.BaseModel, "apply_model", counting_apply)
    previous = set_user_directory(tmp_path)
    yield comfyui, tmp_path, calls
    set_user_directory(previous)


def saved_files(user_dir):
    return sorted((user_dir / "evodiff" / "calibration").glob("*.json"))


@pytest.mark.parametrize("family", ["sd15", "sd3"])
def test_calibrated_sigmas_drive_sampler_custom_advanced_and_are_reused(runtime, family):
    comfyui, user_dir, calls = runtime
    steps = 4
    first = h.run_and_capture(comfyui, calibrated_prompt(family, steps=steps))
    sigmas = h.CAPTURED["sigmas"]
    sampling = h.EVODiffTestCheckpoint().load(family)[0].get_model_object("model_sampling")
    assert torch.isfinite(first).all()
    assert len(sigmas) == steps + 1 and sigmas[-1] == 0 and float(sigmas[0]) == pytest.approx(float(sampling.sigma_max))
    assert (sigmas[1:] < sigmas[:-1]).all() and float(sigmas[-2]) >= float(sampling.sigma_min)
    [saved] = saved_files(user_dir)
    record = json.loads(saved.read_text())
    assert record["sigmas"] == sigmas.tolist() and record["key"]["steps"] == steps
    assert 0 < record["model_calls"] <= TEST_BUDGET and record["chosen"] in record["errors"]
    # the SAMPLER output is SamplerEVODiff at the shift the schedule was learned for
    assert record["shift"] in (0.0, 0.25, 0.5, 1.0) and set(record["shifts"]) <= {"0", "0.25", "0.5", "1"}
    assert h.CAPTURED["sampler_options"]["shift"] == record["shift"]
    calibration_calls = len(calls)
    # the sampling itself makes `steps` model calls (cond and uncond in one batch at cfg 3)
    assert calibration_calls > steps

    calls.clear()
    second = h.run_and_capture(comfyui, calibrated_prompt(family, steps=steps))
    assert len(calls) == steps                            # only the sampler's: the schedule was read back
    assert torch.equal(h.CAPTURED["sigmas"], sigmas)
    assert h.CAPTURED["sampler_options"]["shift"] == record["shift"]
    torch.testing.assert_close(second, first)


def test_another_cfg_or_resolution_calibrates_afresh(runtime):
    comfyui, user_dir, _ = runtime
    h.run_and_capture(comfyui, calibrated_prompt(cfg=3.0))
    h.run_and_capture(comfyui, calibrated_prompt(cfg=5.0))
    h.run_and_capture(comfyui, calibrated_prompt(cfg=5.0, width=32))
    assert len(saved_files(user_dir)) == 3


def test_the_calibration_sees_the_guided_denoiser(runtime, monkeypatch):
    """The model the core calibrates on is ComfyUI's sampler-side denoiser around a CFGGuider with
    the node's cfg, as SamplerCustomAdvanced builds it."""
    import comfy.samplers

    comfyui, _, _ = runtime
    node_module = pack_module(comfyui, "calibrate_node")
    seen = []
    real = node_module.core_calibrate

    def recording(model, noise, *args, **kwargs):
        seen.append((type(model).__name__, model.inner_model, noise.shape))
        return real(model, noise, *args, **kwargs)

    monkeypatch.setattr(node_module, "core_calibrate", recording)
    h.run_and_capture(comfyui, calibrated_prompt(cfg=4.0, samples=3))
    [(wrapper, guider, shape)] = seen
    assert wrapper == "KSamplerX0Inpaint" and isinstance(guider, comfy.samplers.CFGGuider)
    assert guider.cfg == 4.0 and shape == (3, 4, 8, 8)


@pytest.mark.parametrize("inputs, words", [
    ({"steps": 2}, ["steps", "3 to 16", "2"]),
    ({"steps": 17}, ["steps", "17"]),
    ({"samples": 0}, ["samples", "1 to 64"]),
    ({"cfg": -1.0}, ["cfg", "-1.0"]),
], ids=["steps-low", "steps-high", "samples", "cfg"])
def test_bad_widget_value_is_refused_at_queue_time_naming_the_node(comfyui, inputs, words):
    prompt = calibrated_prompt()
    prompt["sigmas"]["inputs"].update(inputs)
    prompt.pop("capture_sigmas")
    ok, _, _, node_errors = h.validate(comfyui, prompt)
    assert not ok and set(node_errors) == {"sigmas"}, node_errors
    text = " ".join(e["details"] for e in node_errors["sigmas"]["errors"])
    assert NODE in text
    for word in words:
        assert word in text, (word, text)


def test_execute_refuses_a_latent_that_is_not_one(comfyui):
    node_class = comfyui.nodes.NODE_CLASS_MAPPINGS[NODE]
    model = h.EVODiffTestCheckpoint().load("sd15")[0]
    cond = h.EVODiffTestConditioning().make("sd15", 1)[0]
    with pytest.raises(ValueError, match=rf"^{NODE}: latent must be a LATENT"):
        node_class.execute(model, cond, cond, 3.0, {"samples": torch.zeros(4)}, 4, 2, 0)


def test_interrupt_stops_the_calibration_and_saves_nothing(runtime):
    import comfy.model_management

    comfyui, user_dir, _ = runtime
    updates = []

    def hook(value, total, preview, *args, **kwargs):
        updates.append(value)
        if value == 5:
            comfy.model_management.interrupt_current_processing(True)
        comfy.model_management.throw_exception_if_processing_interrupted()

    try:
        with progress_hook(hook):
            executor = h.run_prompt(comfyui, calibrated_prompt())
    finally:
        comfy.model_management.interrupt_current_processing(False)
    error = h.execution_error(executor)
    assert error is not None and error["event"] == "execution_interrupted"
    assert max(updates) < 100 and saved_files(user_dir) == []
