"""EVODiff inside a real ComfyUI: KSampler, SamplerCustomAdvanced, splits, masks, progress, interrupt."""
import sys

import pytest
import torch

import comfy_harness as h
from tools.comfyui_runtime import progress_hook as installed_progress_hook

pytestmark = pytest.mark.comfy

STEPS = 6  # enough for EVODiff's 2nd-order steps (where shift matters), still fast
LATENT_NODE = {"sd15": "EmptyLatentImage", "sd3": "EmptySD3LatentImage"}


def ksampler_prompt(family, sampler_name="evodiff", steps=STEPS, cfg=3.0, seed=7, denoise=1.0,
                    batch=1, scheduler="karras"):
    return {
        "model": {"class_type": "EVODiffTestCheckpoint", "inputs": {"family": family}},
        "pos": {"class_type": "EVODiffTestConditioning", "inputs": {"family": family, "seed": 1}},
        "neg": {"class_type": "EVODiffTestConditioning", "inputs": {"family": family, "seed": 2}},
        "latent": {"class_type": LATENT_NODE[family], "inputs": {"width": 64, "height": 64, "batch_size": batch}},
        "sample": {"class_type": "KSampler", "inputs": {
            "model": ["model", 0], "seed": seed, "steps": steps, "cfg": cfg, "sampler_name": sampler_name,
            "scheduler": scheduler, "positive": ["pos", 0], "negative": ["neg", 0],
            "latent_image": ["latent", 0], "denoise": denoise}},
        "capture": {"class_type": "EVODiffTestCaptureLatent", "inputs": {"samples": ["sample", 0], "label": "out"}},
    }


def custom_advanced_prompt(family, shift=0.5, variant=None, noise_schedule="auto", steps=STEPS, cfg=3.0, seed=7):
    prompt = ksampler_prompt(family, steps=steps, cfg=cfg, seed=seed)
    del prompt["sample"]
    prompt.update({
        "evodiff": {"class_type": h.SAMPLER_NODE, "inputs": {
            "shift": shift, "variant": variant or default_variant(), "noise_schedule": noise_schedule}},
        "guider": {"class_type": "CFGGuider", "inputs": {
            "model": ["model", 0], "positive": ["pos", 0], "negative": ["neg", 0], "cfg": cfg}},
        "noise": {"class_type": "RandomNoise", "inputs": {"noise_seed": seed}},
        "sigmas": {"class_type": "BasicScheduler", "inputs": {
            "model": ["model", 0], "scheduler": "karras", "steps": steps, "denoise": 1.0}},
        "sample": {"class_type": "SamplerCustomAdvanced", "inputs": {
            "noise": ["noise", 0], "guider": ["guider", 0], "sampler": ["evodiff", 0],
            "sigmas": ["sigmas", 0], "latent_image": ["latent", 0]}},
    })
    return prompt


def default_variant():
    import evodiff_core
    return evodiff_core.VARIANTS[0]


def core_directly(family, noise_schedule, steps=STEPS, cfg=3.0, seed=7, scheduler="karras"):
    """The same ComfyUI model, conds, noise and sigmas, with top-level evodiff_core as the sampler."""
    import comfy.sample
    import comfy.samplers
    import evodiff_core

    model = h.EVODiffTestCheckpoint().load(family)[0]
    positive = h.EVODiffTestConditioning().make(family, 1)[0]
    negative = h.EVODiffTestConditioning().make(family, 2)[0]
    channels = 16 if family == "sd3" else 4
    latent = torch.zeros([1, channels, 8, 8])
    noise = comfy.sample.prepare_noise(latent, seed)
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), scheduler, steps)
    sampler = comfy.samplers.KSAMPLER(evodiff_core.sample_evodiff, extra_options={"noise_schedule": noise_schedule})
    return comfy.sample.sample_custom(model, noise, cfg, sampler, sigmas, positive, negative, latent, seed=seed)


def pack_module(comfyui, name):
    return sys.modules[f"{comfyui.pack_module_name}.nodes.{name}"]


@pytest.mark.parametrize("family,noise_schedule", [("sd15", "ve"), ("sd3", "flow")])
def test_ksampler_evodiff_equals_the_core_called_directly(comfyui, family, noise_schedule):
    through_ksampler = h.run_and_capture(comfyui, ksampler_prompt(family))
    direct = core_directly(family, noise_schedule)
    assert torch.isfinite(through_ksampler).all()
    torch.testing.assert_close(through_ksampler, direct, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family,expected", [("sd15", "ve"), ("sd3", "flow")])
def test_ksampler_path_hands_the_core_the_model_noise_schedule(comfyui, monkeypatch, family, expected):
    sampler_function = pack_module(comfyui, "sampler_function")
    seen = []
    real_core = sampler_function.core_sample_evodiff

    def recording_core(*args, **kwargs):
        seen.append(kwargs["noise_schedule"])
        return real_core(*args, **kwargs)

    monkeypatch.setattr(sampler_function, "core_sample_evodiff", recording_core)
    h.run_and_capture(comfyui, ksampler_prompt(family, steps=3))
    assert seen == [expected]


def test_noise_schedule_detection_reads_the_patched_model_sampling(comfyui):
    import comfy.samplers
    import comfy_extras.nodes_model_advanced as advanced

    detect = pack_module(comfyui, "sampler_function").noise_schedule_for
    sd15 = h.EVODiffTestCheckpoint().load("sd15")[0]
    sigmas = torch.tensor([1.0, 0.0])

    def as_sampler_sees_it(patcher):  # what KSAMPLER.sample hands the sampler function
        return comfy.samplers.KSamplerX0Inpaint(comfy.samplers.CFGGuider(patcher), sigmas)

    assert detect(as_sampler_sees_it(sd15)) == "ve"
    flow_patched = advanced.ModelSamplingSD3().patch(sd15, 3.0)[0]
    flow_patched = flow_patched[0] if isinstance(flow_patched, tuple) else flow_patched
    assert detect(as_sampler_sees_it(flow_patched)) == "flow"
    assert detect(as_sampler_sees_it(h.EVODiffTestCheckpoint().load("sd3")[0])) == "flow"

    # A wrapper that exposes no inner_model (e.g. a plain function-like object): falls back to VE.
    class HiddenModel:
        def __call__(self, x, sigma, **kwargs):
            return x

    assert detect(HiddenModel()) == "ve"


@pytest.mark.parametrize("family", ["sd15", "sd3"])
def test_sampler_node_in_sampler_custom_advanced_matches_ksampler(comfyui, family):
    via_node = h.run_and_capture(comfyui, custom_advanced_prompt(family))
    via_ksampler = h.run_and_capture(comfyui, ksampler_prompt(family))
    torch.testing.assert_close(via_node, via_ksampler, rtol=1e-5, atol=1e-5)


def test_non_default_shift_changes_the_result(comfyui):
    default = h.run_and_capture(comfyui, custom_advanced_prompt("sd15", shift=0.5))
    shifted = h.run_and_capture(comfyui, custom_advanced_prompt("sd15", shift=1.5))
    assert torch.isfinite(shifted).all()
    assert not torch.allclose(default, shifted, rtol=1e-4, atol=1e-4)


def test_every_variant_runs_from_the_node(comfyui):
    import evodiff_core

    for variant in evodiff_core.VARIANTS:
        out = h.run_and_capture(comfyui, custom_advanced_prompt("sd15", variant=variant))
        assert torch.isfinite(out).all(), variant


def test_sampler_node_returns_a_real_ksampler_usable_by_wrapper_nodes(comfyui):
    """Wrapper nodes (Detail Daemon, Restart, ...) call sampler_function(..., **extra_options)."""
    import comfy.samplers

    node = comfyui.nodes.NODE_CLASS_MAPPINGS[h.SAMPLER_NODE]
    output = node.execute(shift=0.7, variant=default_variant(), noise_schedule="auto")
    sampler = output.result[0] if hasattr(output, "result") else output[0]
    assert type(sampler) is comfy.samplers.KSAMPLER
    assert sampler.extra_options == {"shift": 0.7, "variant": default_variant(), "noise_schedule": "auto"}

    def denoiser(x, sigma, **kwargs):  # exact for N(0, I) data: E[x0 | x] = x / (1 + σ²)
        return x / (1 + sigma.reshape(-1, 1, 1, 1) ** 2)

    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * 10.0
    sigmas = torch.tensor([10.0, 5.0, 2.0, 1.0, 0.5, 0.2, 0.0])
    out = sampler.sampler_function(denoiser, x, sigmas, extra_args={}, callback=None, disable=True,
                                   **sampler.extra_options)
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_ksampler_advanced_split_with_leftover_noise(comfyui):
    prompt = ksampler_prompt("sd15", steps=8)
    del prompt["sample"]
    common = {"model": ["model", 0], "noise_seed": 7, "steps": 8, "cfg": 3.0, "sampler_name": "evodiff",
              "scheduler": "karras", "positive": ["pos", 0], "negative": ["neg", 0]}
    prompt["high"] = {"class_type": "KSamplerAdvanced", "inputs": {
        **common, "add_noise": "enable", "latent_image": ["latent", 0], "start_at_step": 0,
        "end_at_step": 4, "return_with_leftover_noise": "enable"}}
    prompt["sample"] = {"class_type": "KSamplerAdvanced", "inputs": {
        **common, "add_noise": "disable", "latent_image": ["high", 0], "start_at_step": 4,
        "end_at_step": 10000, "return_with_leftover_noise": "disable"}}
    prompt["capture_high"] = {"class_type": "EVODiffTestCaptureLatent",
                              "inputs": {"samples": ["high", 0], "label": "high"}}
    final = h.run_and_capture(comfyui, prompt)
    leftover = h.CAPTURED["high"]
    assert torch.isfinite(final).all() and torch.isfinite(leftover).all()
    assert not torch.allclose(leftover, final)


def test_denoise_below_one_runs(comfyui):
    full = h.run_and_capture(comfyui, ksampler_prompt("sd15"))
    partial = h.run_and_capture(comfyui, ksampler_prompt("sd15", denoise=0.6))
    assert torch.isfinite(partial).all()
    assert not torch.allclose(full, partial)


def test_batch_of_two_runs_and_samples_are_independent(comfyui):
    single = h.run_and_capture(comfyui, ksampler_prompt("sd15", batch=1))
    batch = h.run_and_capture(comfyui, ksampler_prompt("sd15", batch=2))
    assert batch.shape[0] == 2 and torch.isfinite(batch).all()
    # ComfyUI draws the batch noise from one generator, so row 0 has the single run's noise.
    torch.testing.assert_close(batch[:1], single, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(batch[0], batch[1])


def test_inpainting_mask_keeps_the_unmasked_region(comfyui):
    prompt = ksampler_prompt("sd15")
    prompt["capture"]["inputs"]["label"] = "source"
    prompt.update({
        "keep": {"class_type": "SolidMask", "inputs": {"value": 0.0, "width": 64, "height": 64}},
        "repaint": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 32, "height": 64}},
        "mask": {"class_type": "MaskComposite", "inputs": {
            "destination": ["keep", 0], "source": ["repaint", 0], "x": 32, "y": 0, "operation": "add"}},
        "masked": {"class_type": "SetLatentNoiseMask", "inputs": {"samples": ["sample", 0], "mask": ["mask", 0]}},
        "inpaint": {"class_type": "KSampler", "inputs": {
            **prompt["sample"]["inputs"], "seed": 99, "latent_image": ["masked", 0], "denoise": 0.8}},
        "capture_inpaint": {"class_type": "EVODiffTestCaptureLatent",
                            "inputs": {"samples": ["inpaint", 0], "label": "inpainted"}},
    })
    h.run_and_capture(comfyui, prompt, label="source")
    source, inpainted = h.CAPTURED["source"], h.CAPTURED["inpainted"]
    kept, repainted = slice(0, 4), slice(4, 8)  # latent columns (64 px / 8)
    torch.testing.assert_close(inpainted[..., kept], source[..., kept], rtol=1e-4, atol=1e-3)
    assert not torch.allclose(inpainted[..., repainted], source[..., repainted], atol=1e-2)


@pytest.fixture
def progress_hook():
    import comfy.model_management

    updates = []
    actions = {}

    def hook(value, total, preview, *args, **kwargs):
        updates.append((value, total))
        if value in actions:
            actions[value]()
        comfy.model_management.throw_exception_if_processing_interrupted()  # as main.py's hook does

    with installed_progress_hook(hook):
        yield updates, actions


def test_progress_bar_gets_one_update_per_step(comfyui, progress_hook):
    updates, _ = progress_hook
    h.run_and_capture(comfyui, ksampler_prompt("sd15", steps=5))
    assert updates == [(i, 5) for i in range(1, 6)]


def test_interrupt_stops_sampling(comfyui, progress_hook):
    import comfy.model_management

    updates, actions = progress_hook
    actions[2] = lambda: comfy.model_management.interrupt_current_processing(True)
    try:
        executor = h.run_prompt(comfyui, ksampler_prompt("sd15", steps=8))
    finally:
        comfy.model_management.interrupt_current_processing(False)
    error = h.execution_error(executor)
    assert error is not None and error["event"] == "execution_interrupted"
    assert max(value for value, _ in updates) < 8  # stopped within the sampler, not after it
