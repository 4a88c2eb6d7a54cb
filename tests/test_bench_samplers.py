"""The benchmark's ComfyUI side: schedules, KSampler's step rules, NFE counting, the exact reference."""
import pytest
import torch

from bench import comfy_samplers as cs
from bench import cells, matrix
from bench.metrics import rms_error
from bench.problems import noise_for, problem
from tools.comfyui_runtime import model_patcher

pytestmark = pytest.mark.comfy


def test_sd15_karras_schedule_is_the_golden_one():
    import golden

    expected = torch.tensor(golden.case("karras_sd15_n10_gmm")["sigmas"], dtype=torch.float64)
    assert torch.allclose(cs.sigmas_for("euler", "eps", "karras", 10).double(), expected, rtol=1e-6)


def test_flow_simple_schedule_is_sd3_shift_3():
    c = cs.comfyui()
    assert isinstance(cs.model_sampling("flow"), c.model_sampling.CONST)
    assert isinstance(cs.model_sampling("eps"), c.model_sampling.EPS)
    t = torch.tensor([1.0, 0.8, 0.6, 0.4, 0.2])
    expected = torch.cat([3 * t / (1 + 2 * t), torch.zeros(1)])
    assert torch.allclose(cs.sigmas_for("euler", "flow", "simple", 5), expected, atol=1e-6)


@pytest.mark.parametrize("sampler", ["euler", "dpmpp_2m", "uni_pc", "uni_pc_bh2"])
@pytest.mark.parametrize("family, scheduler", cells.UNGUIDED_SCHEDULES)
def test_sigmas_equal_what_comfyui_ksampler_computes(sampler, family, scheduler):
    c = cs.comfyui()
    ksampler = c.samplers.KSampler(model_patcher(cs.model_sampling(family)), steps=8, device="cpu",
                                   sampler=sampler, scheduler=scheduler)
    assert torch.equal(cs.sigmas_for(sampler, family, scheduler, 8), ksampler.sigmas)


def test_nfe_is_measured():
    assert cs.steps_for_nfe("euler", "eps", "karras", 8) == (8, 8)
    assert cs.steps_for_nfe("heun", "eps", "karras", 6) == (3, 5)   # 2 calls per step, 1 on the last
    assert cs.steps_for_nfe("uni_pc", "flow", "simple", 8) == (8, 8)
    calls = cs.run_sampler("heun", "eps", "karras", 4, lambda x, s: 0.5 * x, torch.ones(1, 1, 2, 2)).nfe
    assert calls == 7


def test_every_core_variant_is_benchmarked():
    from evodiff_core import VARIANTS

    assert [s.split(":")[1] for s in cs.all_samplers() if cs.is_evodiff(s)] == list(VARIANTS)
    assert set(cs.BUILTIN_SAMPLERS) <= set(cs.all_samplers())


def test_baselines_are_the_samplers_the_running_comfyui_offers(monkeypatch):
    c = cs.comfyui()
    baselines = cs.baseline_samplers()
    assert set(baselines) <= set(c.samplers.SAMPLER_NAMES)
    assert baselines[:len(cs.BUILTIN_SAMPLERS)] == cs.BUILTIN_SAMPLERS
    for name in cs.NEWER_DETERMINISTIC:
        assert (name in baselines) == (name in c.samplers.SAMPLER_NAMES)
    # the list is read from ComfyUI at call time, not fixed when the module was written
    monkeypatch.setattr(c.samplers, "SAMPLER_NAMES", list(cs.BUILTIN_SAMPLERS) + list(cs.NEWER_DETERMINISTIC))
    assert cs.baseline_samplers() == cs.BUILTIN_SAMPLERS + cs.NEWER_DETERMINISTIC
    monkeypatch.setattr(c.samplers, "SAMPLER_NAMES", list(cs.BUILTIN_SAMPLERS))
    assert cs.baseline_samplers() == cs.BUILTIN_SAMPLERS
    assert not any(name.endswith("cfg_pp") or "cfgpp" in name for name in cs.NEWER_DETERMINISTIC)


@pytest.mark.parametrize("sampler", cs.NEWER_DETERMINISTIC)
def test_newer_baselines_are_deterministic_where_present(sampler):
    if sampler not in cs.baseline_samplers():
        pytest.skip(f"{sampler} is not in this ComfyUI")
    noise = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    runs = [cs.run_sampler(sampler, "eps", "karras", 6, lambda x, s: 0.5 * x, noise, seed=seed) for seed in (1, 2)]
    assert torch.isfinite(runs[0].x).all() and torch.equal(runs[0].x, runs[1].x)  # no noise drawn


def test_evodiff_sampler_names_carry_variant_and_shift():
    """'evodiff:<variant>@shift=<mu>' (the ablation in docs/variants.md) reaches the core's options."""
    assert cs.sampler_object("evodiff:improved@shift=0", "flow").extra_options == {
        "noise_schedule": "flow", "variant": "improved", "shift": 0.0}
    assert cs.sampler_object("evodiff:reference", "eps").extra_options == {
        "noise_schedule": "ve", "variant": "reference"}


@pytest.mark.parametrize("cell", [cells.UNGUIDED[0], cells.UNGUIDED[2]], ids=lambda c: c.name)
def test_a_builtin_sampler_converges_to_the_exact_solution(cell):
    prob = problem(cell.problem)
    ref = matrix.solution(cell, cells.Settings(nfes=(), n_samples=16, ode_steps=100, seeds=(7,)))
    noise = noise_for(prob, (7,), 16)
    coarse, fine = (cs.run_sampler("dpmpp_2m", cell.family, cell.scheduler, steps, prob.denoiser(cell.family), noise)
                    for steps in (10, 200))
    assert ref.refinement_rms < 1e-3
    assert rms_error(fine.x, ref.x) < 0.02 < rms_error(coarse.x, ref.x)
