"""The reference variant at its edges: batch independence at latent sizes, the N > 20 rule's
runaway under strong guidance, steps that leave the ODE, near-equal sigmas, and the final
rescale (F3) with fp16 latents."""
import logging
import math

import pytest
import torch

import golden
from evodiff_core import reference, sample_evodiff
from evodiff_core.steps import channel_dot
from evodiff_core.schedule import plan
from test_core_sampler import SD15_KARRAS_10, SD15_KARRAS_22, sigmas_of
from tools.analytic import (ClassConditionalMixture, GaussianMixture, anisotropic_mixture,
                            linear_gaussian_denoiser, one_sample_at_a_time)

SD15_KARRAS_25 = golden.case("karras_sd15_n25_gmm")["sigmas"]          # N = 24
SPLIT_HIGH = golden.case("karras_sd15_n20_split_high12_gmm")["sigmas"]  # no trailing 0
RUNAWAY = "consistency rule"
OFF_THE_ODE = "left the ODE"
MERGED = "nearly equal"
RESCALE_RANGE = "beyond the largest"


def reference_messages(caplog, needle):
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("evodiff_core")]
    return [m for m in messages if needle in m]


def sample_reference_logged(caplog, model, x, sigmas):
    """The reference variant's output, with the core's warnings captured in caplog."""
    with caplog.at_level(logging.WARNING, logger="evodiff_core"):
        return sample_evodiff(model, x, sigmas, disable=True, variant="reference")


# ---------------------------------------------------------------- batch independence

def large_mixture(dtype, shape=(4, 64, 64), k=3, seed=5):
    """A mixture with a different mean per pixel and variances per channel, in ``dtype``."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn((k, *shape), generator=g).to(dtype)
    variances = (torch.rand((k, shape[0]), generator=g) * 0.3 + 0.05).to(dtype)
    return GaussianMixture.per_channel(means, variances, torch.full((k,), 1.0 / k, dtype=dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("sigmas", [SD15_KARRAS_10, SD15_KARRAS_22, SPLIT_HIGH], ids=["N9", "N21", "split"])
def test_a_batch_of_three_equals_each_sample_alone_bit_for_bit_at_64x64(sigmas, dtype):
    """Inner products over 4096 pixels and the per-channel logistic: the batch size changes
    neither (einsum did in both dtypes, torch.sigmoid in float64 here)."""
    sig = sigmas_of(sigmas, dtype)
    model = one_sample_at_a_time(large_mixture(dtype).denoise_ve)
    x = torch.randn((3, 4, 64, 64), generator=torch.Generator().manual_seed(2)).to(dtype) * sig[0]
    batch = sample_evodiff(model, x, sig, disable=True, variant="reference")
    assert batch.dtype == dtype and torch.isfinite(batch).all()
    for b in range(3):
        assert torch.equal(sample_evodiff(model, x[b:b + 1].clone(), sig, disable=True, variant="reference"),
                           batch[b:b + 1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("length", [64, 64 * 64, 16 * 128 * 128])
def test_channel_dot_does_not_depend_on_the_batch(dtype, length):
    g = torch.Generator().manual_seed(3)
    a, b = (torch.randn((4, 4, length), generator=g, dtype=dtype) for _ in range(2))
    for size in range(1, 5):
        dots = channel_dot(a[:size], b[:size])
        for i in range(size):
            assert torch.equal(channel_dot(a[i:i + 1].clone(), b[i:i + 1].clone()), dots[i:i + 1])
    products = a.double() * b.double()     # the value, to a rounding error of the summation
    error = (channel_dot(a, b).double() - products.sum(-1, keepdim=True)).abs()
    assert (error <= 1e-5 * products.abs().sum(-1, keepdim=True)).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_logistic_does_not_depend_on_the_batch(dtype):
    """Per-(sample, channel) values [B, 4, 1], 50 random draws (torch.sigmoid fails most)."""
    g = torch.Generator().manual_seed(4)
    for _ in range(50):
        z = torch.randn((4, 4, 1), generator=g, dtype=dtype) * 2
        for size in range(1, 5):
            values = reference.logistic(z[:size].clone())
            for i in range(size):
                assert torch.equal(reference.logistic(z[i:i + 1].clone()), values[i:i + 1])
        torch.testing.assert_close(reference.logistic(z), torch.sigmoid(z))


# ---------------------------------------------------------------- the N > 20 rule under guidance

def two_class_mixture(seed, components=4, shape=(4, 4, 4)):
    """An anisotropic mixture (per-dimension variances 0.01..1, about unit variance overall)
    whose components k mod 2 form two classes: (p(x0), [p(x0 | c=0), p(x0 | c=1)])."""
    mixture = anisotropic_mixture(components, shape, seed)
    classes = ClassConditionalMixture(mixture, torch.arange(components) % 2)
    return mixture, [classes.sub_mixture(c) for c in (0, 1)]


def guided_model(unconditional, conditional, cfg):
    """Classifier-free guidance with exact parts: D = D_u + cfg·(D_c − D_u)."""
    def model(x, sigma, **kw):
        d_u = unconditional.denoise_ve(x, sigma)
        return d_u + cfg * (conditional.denoise_ve(x, sigma) - d_u)
    return model


def runaway_case(sigmas, cfg=6.0):
    """Found by a sweep (sample 7 of 256, seed 4, class 0, cfg 6): at 25 SD1.5 karras steps the
    rule weights one correction by ~1e3 and the sample ends at |x| ~ 360 (data ~ unit scale)."""
    unconditional, by_class = two_class_mixture(seed=4)
    g = torch.Generator().manual_seed(4)
    x = torch.randn((256, 4, 4, 4), generator=g, dtype=torch.float64)[7:8] * sigmas[0]
    return guided_model(unconditional, by_class[0], cfg), x


def test_a_runaway_of_the_consistency_rule_is_named_with_its_fix(caplog):
    sig = sigmas_of(SD15_KARRAS_25)
    model, x = runaway_case(sig)
    out = sample_reference_logged(caplog, model, x, sig)
    assert out.abs().max() > 50                      # the garbage the warning is about
    (message,) = reference_messages(caplog, RUNAWAY)
    assert "'improved' variant" in message and "at most 20 solver steps" in message and "cfg" in message
    # each fix named there works on this sample: the improved variant, the rule off, a lower cfg
    assert sample_evodiff(model, x, sig, disable=True, variant="improved").abs().max() < 10
    assert sample_evodiff(model, x, sigmas_of(golden.case("karras_sd15_n21_gmm")["sigmas"]), disable=True,
                          variant="reference").abs().max() < 10
    lower_cfg, _ = runaway_case(sig, cfg=3.0)
    assert sample_evodiff(lower_cfg, x, sig, disable=True, variant="reference").abs().max() < 10


def test_the_runaway_watch_reads_the_device_once_and_only_under_the_rule(monkeypatch):
    """The watch keeps a device maximum per step; the one read is in finish()."""
    reads = []
    original = reference.RuleRunawayWatch.report
    monkeypatch.setattr(reference.RuleRunawayWatch, "report",
                        lambda self: reads.append(self.largest) or original(self))
    sig = sigmas_of(SD15_KARRAS_25)
    model, x = runaway_case(sig)
    steps = reference.Steps(plan(sig.tolist()), 0.5, "ve")
    assert steps.runaway.largest is None
    sample_evodiff(model, x, sig, disable=True, variant="reference")
    assert len(reads) == 1 and isinstance(reads[0], torch.Tensor) and reads[0].item() > steps.runaway.limit
    reads.clear()
    sample_evodiff(model, x, sigmas_of(SD15_KARRAS_10), disable=True, variant="reference")
    assert reads == [None]                            # N = 9: nothing watched, nothing read


def test_the_runaway_limit_is_the_rules_bound_inside_the_projection_clamp():
    """ζ = sig(−(|ζ*| − μ)·c) ≥ sig(μ − 2) while |ζ*| ≤ 2, and σ_i·h < 1."""
    for shift in (0.0, 0.5, 1.0, 2.0):
        bound = 0.5 / (1 / (1 + math.exp(-(shift - reference.PROJECTION_CLAMP))))
        assert reference.rule_step_scale_limit(shift) == pytest.approx(bound)


@pytest.mark.parametrize("name", [c["name"] for c in golden.cases()])
def test_no_warning_on_the_golden_cases(name, caplog):
    """No runaway, no step off the ODE, no merged sigma (their lists have no near-equal ones,
    so they are sampled bit for bit as the official code does: test_core_golden.py)."""
    c = golden.case(name)
    with caplog.at_level(logging.WARNING, logger="evodiff_core"):
        sample_evodiff(golden.RecordingModel(golden.denoiser(c)), golden.tensor(name, "x_init"),
                       golden.tensor(name, "sigmas"), disable=True, variant="reference")
    assert reference_messages(caplog, "EVODiff") == []
    assert reference.near_equal_merged(plan(c["sigmas"]))[1] == []


# ---------------------------------------------------------------- near-equal sigmas

SD15_KARRAS_20 = golden.case("karras_sd15_n20_gmm")["sigmas"]


def with_near_equal(sigmas, index, eps):
    """σ_index·(1 − ε) inserted right after σ_index."""
    return sigmas[:index + 1] + [sigmas[index] * (1 - eps)] + sigmas[index + 1:]


@pytest.mark.parametrize("eps", [1e-6, 1e-4, 1e-3])
def test_near_equal_sigmas_are_merged_and_named(eps, caplog):
    """karras-20 with σ5·(1 − ε) inserted after σ5: before the merge the output moved by 62x its
    norm at ε = 1e-6 here (1.8x at 1e-4, 0.056 at 1e-3: 1/ε growth), silently. Now σ5 is merged
    into its near-duplicate: the output is the reference's on the list without it, up to the O(ε)
    shift of that grid point,
    and the warning names both sigmas and the fixes."""
    model = one_sample_at_a_time(golden.denoiser(golden.case("karras_sd15_n20_gmm")))
    x = torch.randn((2, 4, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 14.6
    base = sample_evodiff(model, x, sigmas_of(SD15_KARRAS_20), disable=True, variant="reference")
    with caplog.at_level(logging.WARNING, logger="evodiff_core"):
        out = sample_evodiff(model, x, sigmas_of(with_near_equal(SD15_KARRAS_20, 5, eps)), disable=True,
                             variant="reference")
    assert (out - base).norm() <= 2 * eps * base.norm()
    (message,) = reference_messages(caplog, MERGED)
    assert "sigmas[5]" in message and "sigmas[6]" in message and "Sampled without sigmas[5]" in message
    assert "Remove the duplicate sigma" in message and "'improved' variant" in message


def test_the_first_sigma_is_kept_when_the_first_step_is_short():
    """The latent starts at sigmas[0]: a short first step merges sigmas[1] instead."""
    sigmas = with_near_equal(SD15_KARRAS_20, 0, 1e-5)
    p, merged = reference.near_equal_merged(plan(sigmas))
    assert merged == [(1, 0, pytest.approx(1e-5 / math.log(sigmas[0] / sigmas[2]), rel=1e-3))]
    assert p.grid == SD15_KARRAS_20[:1] + SD15_KARRAS_20[1:-1] and p.grid_index[:2] == [0, 2]
    assert [iv.kind for iv in p.intervals][:3] == ["warmup", "skip", "order2"]


def test_a_short_step_inside_the_merge_band_is_sampled_as_given():
    """r of (3) in [1/32, 32] is left alone: the smallest r of any ComfyUI scheduler (2-60
    steps) is linear_quadratic's 0.068, so stock lists are never touched."""
    sigmas = with_near_equal(SD15_KARRAS_20, 5, 0.05)         # a step 1/6 of its neighbour's
    p, merged = reference.near_equal_merged(plan(sigmas))
    assert merged == [] and p.grid == plan(sigmas).grid


# ---------------------------------------------------------------- steps that leave the ODE

def stiff_guidance_case(cfg):
    """Found by a search over guided mixtures: 6 SD1.5 karras sigmas (N = 5, no N > 20 rule),
    seed 1, cfg 9: the reference ends at |x| up to 623 (data about unit scale), improved < 4."""
    unconditional, by_class = two_class_mixture(seed=1)
    sig = sigmas_of(golden.case("karras_sd15_n6_linear")["sigmas"])
    x = torch.randn((64, 4, 4, 4), generator=torch.Generator().manual_seed(1), dtype=torch.float64) * sig[0]
    return guided_model(unconditional, by_class[0], cfg), x, sig


def test_steps_that_leave_the_ode_under_strong_guidance_are_named(caplog):
    model, x, sig = stiff_guidance_case(cfg=9.0)
    out = sample_reference_logged(caplog, model, x, sig)
    assert out.abs().max() > 100                     # the garbage the warning is about
    (message,) = reference_messages(caplog, OFF_THE_ODE)
    assert "noise estimate" in message and "'improved' variant" in message and "lower cfg" in message
    assert sample_evodiff(model, x, sig, disable=True, variant="improved").abs().max() < 10
    caplog.clear()
    unguided, _, _ = stiff_guidance_case(cfg=1.0)
    sample_reference_logged(caplog, unguided, x, sig)
    assert reference_messages(caplog, "EVODiff") == []


def test_the_off_the_ode_watch_reads_the_device_once(monkeypatch):
    """observe() keeps device scalars per model call; first_off() reads them once, in finish()."""
    reads = []
    original = reference.OffTheODEWatch.first_off
    monkeypatch.setattr(reference.OffTheODEWatch, "first_off",
                        lambda self: reads.append([type(both) for _, both in self.calls]) or original(self))
    model, x, sig = stiff_guidance_case(cfg=9.0)
    sample_evodiff(model, x, sig, disable=True, variant="reference")
    # N = 5: three probes and the final denoise
    assert reads == [[torch.Tensor] * 4]


def test_no_runaway_warning_on_an_unguided_25_step_karras_run(caplog):
    unconditional, _ = two_class_mixture(seed=4)
    sig = sigmas_of(SD15_KARRAS_25)
    x = torch.randn((256, 4, 4, 4), generator=torch.Generator().manual_seed(4), dtype=torch.float64) * sig[0]
    with caplog.at_level(logging.WARNING, logger="evodiff_core"):
        out = sample_evodiff(lambda x, s, **kw: unconditional.denoise_ve(x, s), x, sig, disable=True,
                             variant="reference")
    assert torch.isfinite(out).all() and reference_messages(caplog, RUNAWAY) == []


# ---------------------------------------------------------------- the final rescale (F3), fp16

SHORT_LARGE_END = [14.6, 8.0, 4.0, 2.0, 0.0]     # ends at sigma 2: a = 1 − sqrt(8) = −1.83


def fp16_model(x, sigma, **kw):
    """An fp16 model: takes and returns float16, computes accurately inside."""
    return linear_gaussian_denoiser(x.float(), sigma.float()).half()


def test_the_final_step_runs_in_float32_for_an_fp16_latent(monkeypatch):
    seen = []
    original = reference.final_step_reference

    def recording(x, m0, m1, sigma, sigma_next):
        out = original(x, m0, m1, sigma, sigma_next)
        seen.append((x.dtype, m0.dtype, m1.dtype, out.dtype))
        return out

    monkeypatch.setattr(reference, "final_step_reference", recording)
    sig = sigmas_of(SHORT_LARGE_END, torch.float32)
    x = (torch.randn((1, 4, 64, 64), generator=torch.Generator().manual_seed(0)) * sig[0]).half()
    out = sample_evodiff(fp16_model, x, sig, disable=True, variant="reference")
    assert seen == [(torch.float32,) * 4] and out.dtype == torch.float16 and torch.isfinite(out).all()


def test_the_rescale_warning_names_the_large_last_sigma_and_the_fix(caplog):
    sig = sigmas_of(SHORT_LARGE_END, torch.float32)
    x = (torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(0)) * sig[0]).half()
    sample_reference_logged(caplog, fp16_model, x, sig)
    (message,) = reference_messages(caplog, "scales the latent")
    assert "ends at sigma 2" in message and "a = 1 - sqrt(4 * 2) = -1.828" in message
    assert "flips its sign" in message and "ends at a small sigma" in message and "improved variant" in message
    caplog.clear()
    sample_reference_logged(caplog, fp16_model, x, sigmas_of(SD15_KARRAS_10, torch.float32))
    assert reference_messages(caplog, "EVODiff") == []


def rescaled_last_step(sigmas, seed=0):
    """Steps.last on a list ending in 0, as the sampler drives it: x, D_{N−1}, D_{N−2} in float32."""
    steps = reference.Steps(plan(sigmas), 0.5, "ve")
    g = torch.Generator().manual_seed(seed)
    n = len(steps.grid) - 1       # the last solver step, σ_{N−1} → σ_N
    x = torch.randn((1, 4, 64, 64), generator=g) * steps.grid[n - 1]
    for _ in range(2):   # D_{N−2}, then D_{N−1}
        steps.remember(torch.randn((1, 4, 4096), generator=g))
    return steps, steps.last(n, x.flatten(2))


def test_a_rescaled_state_beyond_the_latents_dtype_is_named_as_the_cause(caplog):
    """a = 1 − sqrt(300·200) = −244 on a state of scale 200: |x_N| > 65504, fp16's largest.
    The state itself stays float32 (finite); the model would get inf in fp16."""
    with caplog.at_level(logging.WARNING, logger="evodiff_core"):
        steps, x_last = rescaled_last_step([400.0, 300.0, 200.0, 0.0])
        assert x_last.dtype == torch.float32 and torch.isfinite(x_last).all()
        assert x_last.abs().max() > torch.finfo(torch.float16).max
        steps.finish(latent_dtype=torch.float16)
    (message,) = reference_messages(caplog, RESCALE_RANGE)
    assert "float16" in message and "not the model" in message and "ends at 200" in message
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="evodiff_core"):
        for dtype in (torch.float32, torch.bfloat16, None):
            steps.finish(latent_dtype=dtype)
        steps, x_last = rescaled_last_step(SHORT_LARGE_END)       # rescaled too, but |x_N| ~ 10
        steps.finish(latent_dtype=torch.float16)
    assert reference_messages(caplog, "scales the latent") and reference_messages(caplog, RESCALE_RANGE) == []


def test_an_fp16_latent_past_its_range_after_the_rescale_fails_loudly(caplog):
    """Through the sampler: the rescale is named before the sampler's error. (With
    ``finish(latent_dtype=x.dtype)`` the range warning above is logged too.)"""
    sig = sigmas_of([400.0, 300.0, 200.0, 0.0], torch.float32)
    x = (torch.randn((1, 4, 64, 64), generator=torch.Generator().manual_seed(0)) * sig[0]).half()
    with caplog.at_level(logging.WARNING, logger="evodiff_core"), pytest.raises(FloatingPointError):
        sample_evodiff(fp16_model, x, sig, disable=True, variant="reference")
    (message,) = reference_messages(caplog, "scales the latent")
    assert "a = 1 - sqrt(300 * 200) = -243.949" in message and "magnifies" in message


def test_finish_is_a_no_op_when_nothing_happened(caplog):
    with caplog.at_level(logging.WARNING, logger="evodiff_core"):
        steps, _ = rescaled_last_step(SD15_KARRAS_10)
        steps.finish(latent_dtype=torch.float16)
        steps.finish()
        reference.Steps(plan(SD15_KARRAS_22), 0.5, "ve").finish()   # never stepped
    assert caplog.records == []
