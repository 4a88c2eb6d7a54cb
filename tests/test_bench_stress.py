"""The stress matrix (bench.cells, .matrix, .verdicts, .stress_report): guided exact denoisers, the new
model samplings, the verdict rules on synthetic records, and one tiny real run through KSAMPLER."""
import importlib
import math

import pytest
import torch

from bench import comfy_samplers as cs
from bench import cells, learned, matrix, stress_report, verdicts
from bench.metrics import rms_error
from bench.problems import GuidedDigitsProblem, labels_for, noise_for, problem

pytestmark = pytest.mark.comfy


def _rows(prob, n=12, sigma=1.7):
    x = 1.5 * noise_for(prob, (3,), n)
    return x, torch.full((n,), sigma, dtype=torch.float64), labels_for(prob, (3,), n)


@pytest.mark.parametrize("family", ["eps", "flow3"])
def test_guided_mixture_is_exact_class_and_full_posterior_means(family):
    prob = problem("mixture-cfg")
    x, sigma, labels = _rows(prob, sigma=1.7 if family == "eps" else 0.6)
    assert labels.unique().numel() > 1                     # rows really ask for different classes
    conditional = prob.guided_denoiser(family, labels, 1.0)(x, sigma)
    unconditional = prob.guided_denoiser(family, labels, 0.0)(x, sigma)
    method = "denoise_flow" if family == "flow3" else "denoise_ve"
    for b, label in enumerate(labels.tolist()):            # D_c: the class's own sub-mixture, row by row
        sub = getattr(prob.conditional.sub_mixture(label), method)(x[b:b + 1], sigma[b:b + 1])
        assert torch.allclose(conditional[b:b + 1], sub, atol=1e-12)
    assert torch.allclose(unconditional, getattr(prob.mixture, method)(x, sigma), atol=1e-12)
    guided = prob.guided_denoiser(family, labels, 4.0)(x, sigma)
    assert torch.allclose(guided, unconditional + 4.0 * (conditional - unconditional), atol=1e-10)
    assert (conditional - unconditional).abs().max() > 0.1   # guidance changes something


def test_mixture_labels_follow_the_class_weights():
    prob = problem("mixture-cfg")
    counts = torch.bincount(labels_for(prob, (0,), 4000), minlength=prob.n_classes).double()
    assert torch.allclose(counts / 4000, prob.conditional.class_weights(), atol=0.03)
    assert not torch.equal(labels_for(prob, (0,), 50), labels_for(prob, (1,), 50))


def test_edm_model_sampling_runs_80_to_0_002_then_0():
    c = cs.comfyui()
    ms = cs.model_sampling("edm")
    assert isinstance(ms, c.model_sampling.ModelSamplingContinuousEDM) and isinstance(ms, c.model_sampling.EDM)
    assert ms.sigma_data == 0.5
    for scheduler in ("karras", "exponential"):
        sigmas = cs.sigmas_for("euler", "edm", scheduler, 8)
        assert sigmas[0].item() == pytest.approx(80.0, rel=1e-5)
        assert sigmas[-2].item() == pytest.approx(0.002, rel=1e-5) and sigmas[-1].item() == 0


@pytest.mark.parametrize("shift", [1, 3, 6])
def test_flow_shifts_start_at_1_and_follow_the_shift(shift):
    c = cs.comfyui()
    family = f"flow{shift}"
    assert isinstance(cs.model_sampling(family), c.model_sampling.CONST) and cs.is_flow(family)
    t = torch.tensor([1.0, 0.8, 0.6, 0.4, 0.2])
    expected = torch.cat([shift * t / (1 + (shift - 1) * t), torch.zeros(1)])
    assert torch.allclose(cs.sigmas_for("euler", family, "simple", 5), expected, atol=1e-6)
    for scheduler in ("beta", "normal"):
        assert cs.sigmas_for("euler", family, scheduler, 5)[0].item() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("family, scheduler", [("edm", "karras"), ("flow6", "beta"), ("flow1", "normal")])
def test_new_families_give_what_comfyui_ksampler_computes(family, scheduler):
    c = cs.comfyui()
    ksampler = c.samplers.KSampler(cs.model_patcher(cs.model_sampling(family)), steps=7, device="cpu",
                                   sampler="dpmpp_2m", scheduler=scheduler)
    assert torch.equal(cs.sigmas_for("dpmpp_2m", family, scheduler, 7), ksampler.sigmas)


def test_evodiff_is_the_packs_ksampler_function_and_detects_the_schedule():
    c = cs.comfyui()
    obj = cs.sampler_object("evodiff", "edm")
    assert type(obj) is c.samplers.KSAMPLER and obj.extra_options == {}
    function = obj.sampler_function
    assert getattr(function, "evodiff_pack", False) and function.__module__.endswith("nodes.sampler_function")
    detect = importlib.import_module(function.__module__).noise_schedule_for
    for family, expected in [("edm", "ve"), ("eps", "ve"), ("flow6", "flow")]:
        model = cs.CountingModel(None, cs.model_sampling(family))
        assert detect(type("Wrapped", (), {"inner_model": model})()) == expected


def test_missing_conditional_digits_weights_are_named(monkeypatch, tmp_path):
    missing = tmp_path / "digits_cond_edm_denoiser.safetensors"
    monkeypatch.setattr(GuidedDigitsProblem, "weights", missing)
    with pytest.raises(FileNotFoundError, match="digits_cond_edm_denoiser.safetensors"):
        GuidedDigitsProblem()


def test_the_validation_problems_are_other_problems():
    """The validation set shares no model with the tuning set: another mixture, another digits net."""
    assert problem("mixture-b").mixture.means.shape[0] != problem("mixture").mixture.means.shape[0]
    assert problem("digits-b-cfg").weights != problem("digits-cfg").weights
    assert problem("digits-b-cfg").weights.is_file()
    tuning = {(c.problem, c.family, c.scheduler, c.cfg) for c in cells.TUNING_CELLS}
    validation = {(c.problem, c.family, c.scheduler, c.cfg) for c in cells.VALIDATION_CELLS}
    assert not tuning & validation
    assert {c.problem for c in cells.VALIDATION_CELLS} <= {"mixture-b", "mixture-b-cfg", "digits-b-cfg"}


def test_cells_cover_the_axes_once():
    every = cells.full_cells()
    assert len(every) == len(cells.SCHEDULES) * 3 + len(cells.GUIDED_SCHEDULES) * 7 - len(cells.GUIDED_SCHEDULES)
    assert len({c.name for c in every}) == len(every)
    assert set(cells.QUICK_CELLS) <= set(every)
    assert {c.cfg for c in cells.QUICK_CELLS if c.problem == "mixture-cfg"} == {4.0, 7.0}
    with pytest.raises(ValueError):
        cells.Cell("mixture", "eps", "karras", 4.0)      # an unguided problem takes no scale


def _record(sampler, fd, noise=0.1, nfe=5, cell="c", finite=True):
    return dict(sampler=sampler, cell=cell, nfe_target=nfe, nfe=nfe, fd=fd if finite else math.inf,
                fd_noise=noise, rms=fd, finite=finite, error=None)


def test_divergence_flag_verdicts_and_best_on_synthetic_records():
    # margin for a tie: 2 * hypot(0.1, 0.1) = 0.283
    records = verdicts.judge([
        _record("euler", 1.0), _record("dpmpp_2m", 0.5), _record("evodiff", 0.25),      # 0.25 apart: tie
        _record("heun", 1.01), _record("lms", 0.4, finite=False),
        _record("euler", 1.0, nfe=8), _record("dpmpp_2m", 0.5, nfe=8), _record("evodiff", 0.8, nfe=8),  # lost
        _record("euler", 1.0, nfe=10), _record("dpmpp_2m", 0.5, nfe=10), _record("evodiff", 0.1, nfe=10)])  # won
    at = {(r["sampler"], r["nfe_target"]): r for r in records}
    assert [at[(s, 5)]["diverged"] for s in ("euler", "dpmpp_2m", "evodiff", "heun", "lms")] == [
        False, False, False, True, True]
    assert [at[("evodiff", n)]["vs_rival"] for n in (5, 8, 10)] == ["tie", "lost", "won"]
    assert [at[("evodiff", n)]["best_of_all"] for n in (5, 8, 10)] == [True, False, True]
    assert verdicts.outcome(_record("evodiff", 0.2, finite=False), _record("dpmpp_2m", 9.0)) == "lost"
    summary = verdicts.summarize(records)
    assert summary.vs_rival == {"tie": 1, "lost": 1, "won": 1}
    assert (summary.best_of_all, summary.best_of_all_of) == (2, 3)
    assert summary.diverged["heun"]["points"] == 1 and summary.diverged["lms"]["cells"] == 1
    table = stress_report.cell_table(records, "c").splitlines()
    assert table[0] == "| sampler | NFE 5 | NFE 8 | NFE 10 |"
    assert "**0.25**" in table[4] and "1.01 †" in next(line for line in table if line.startswith("| heun"))
    assert "✗ non-finite" in next(line for line in table if line.startswith("| lms"))


@pytest.fixture(scope="module")
def tiny():
    tiny_cells = [cells.Cell("mixture-cfg", "eps", "karras", 4.0), cells.Cell("mixture", "edm", "karras"),
                  cells.Cell("mixture", "flow6", "simple")]
    settings = cells.Settings(nfes=(5, 30), n_samples=16, ode_steps=60, seeds=(11,))
    return tiny_cells, settings, matrix.run(tiny_cells, ["evodiff", "euler", "dpmpp_2m"], settings)


def test_a_tiny_real_run_is_finite_and_converges(tiny):
    tiny_cells, settings, tiny = tiny
    assert len(tiny) == 3 * 3 * 2
    for r in tiny:
        assert r["finite"] and r["error"] is None and r["nfe"] == r["nfe_target"]
        assert all(math.isfinite(r[k]) for k in ("fd", "fd_noise", "rms", "rms_noise"))
        assert r["diverged"] in (True, False) and not (r["sampler"] == "euler" and r["diverged"])
    for cell in {r["cell"] for r in tiny}:       # the runs and the exact solution solve the same ODE
        rms = {(r["sampler"], r["nfe_target"]): r["rms"] for r in tiny if r["cell"] == cell}
        assert rms[("dpmpp_2m", 30)] < 0.2 * rms[("dpmpp_2m", 5)]
        assert rms[("evodiff", 30)] < 0.2 * rms[("evodiff", 5)]
    assert all(r["vs_rival"] in ("won", "tie", "lost") for r in tiny if r["sampler"] == "evodiff")
    assert all(ref["refinement_rms"] < 1e-3 for ref in matrix.summaries(tiny_cells, settings))


def test_report_leads_with_the_summary(tiny, tmp_path):
    tiny_cells, settings, tiny = tiny
    text = stress_report.markdown(tiny, matrix.summaries(tiny_cells, settings), "header\n", "title")
    assert text.index("## Summary") < text.index("## Cells") < text.index("### mixture-cfg w=4, SD1.5 karras")
    assert "evodiff against dpmpp_2m" in text and "flow s6 simple" in text
    guided_row = next(line for line in text.splitlines() if line.startswith("| guided |"))
    assert guided_row.split(" | ")[1] == "2"                 # one guided cell x 2 NFEs for evodiff
    guided = next(r for r in tiny if r["cfg"] == 4.0 and r["sampler"] == "evodiff")
    assert guided["problem"] == "mixture-cfg" and guided["n_samples"] == 16


@pytest.mark.skipif(not learned.CONDITIONAL_FILE.is_file(), reason="conditional digits weights not trained yet")
def test_digits_cfg_cells_run_with_guidance():
    guided = [cells.Cell("digits-cfg", "eps", "karras", w) for w in (1.0, 5.0)]
    settings = cells.Settings(nfes=(6,), n_samples=16, ode_steps=40, seeds=(11,))
    records = matrix.run(guided, ["euler", "evodiff"], settings)
    assert all(r["finite"] and math.isfinite(r["fd"]) for r in records)
    exact = [matrix.solution(c, settings).x for c in guided]
    assert rms_error(exact[0], exact[1]) > 0.05                 # guidance moves the exact solution


def test_an_earlier_commits_core_runs_as_a_sampler():
    """'evodiff@<rev>' runs that commit's core (bench.cores), as its own package. cb0fc30's
    default is today's with the (V12) warm-up corrector off ((V11) does not apply to this list,
    which ends with the (V10) probe ending)."""
    noise = torch.randn((4, 4, 4, 4), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    denoiser = problem("mixture").denoiser("eps")
    now = cs.run_sampler("evodiff", "eps", "karras", 6, denoiser, noise)
    then = cs.run_sampler("evodiff@cb0fc30", "eps", "karras", 6, denoiser, noise)
    ablated = cs.run_sampler("evodiff~no-warmup-corrector", "eps", "karras", 6, denoiser, noise)
    older = cs.run_sampler("evodiff@cd34a6a", "eps", "karras", 6, denoiser, noise)
    assert then.nfe == now.nfe == older.nfe == 6
    assert torch.equal(then.x, ablated.x)
    assert not torch.equal(then.x, now.x) and not torch.equal(older.x, now.x)
    assert cs.is_evodiff("evodiff@cd34a6a") and cs.sampler_object("evodiff@shift=0", "eps") is not None


@pytest.mark.parametrize("rule", ["no-gate", "no-conditioning", "no-probe-ending", "full-first-probe",
                                  "no-final-extrapolation", "no-warmup-corrector"])
def test_each_ablation_switches_its_rule_off_for_the_call_only(rule):
    """'evodiff~<rule>' changes the output on a list where the rule acts, and leaves the core's
    constants as they were afterwards."""
    from evodiff_core import improved

    noise = torch.randn((4, 4, 4, 4), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    denoiser = problem("mixture-cfg").guided_denoiser("eps", torch.arange(4) % 5, 4.0)
    # linear_quadratic's seam makes q = 14.6 (V6' acts); karras at 6 steps has a long last step (V10);
    # beta's last step is short, so its final call is kept and (V11) extrapolates it
    scheduler = {"no-conditioning": "linear_quadratic", "no-final-extrapolation": "beta"}.get(rule, "karras")
    def constants():
        return (improved.SLOPE_BASELINE_RATIO, improved.PROBE_ENDING_MIN_LOG_SNR_STEP, improved.Steps.__init__,
                improved.Steps.final_denoised, improved.order2_step)

    saved = constants()
    default = cs.run_sampler("evodiff", "eps", scheduler, 6, denoiser, noise)
    ablated = cs.run_sampler(f"evodiff~{rule}", "eps", scheduler, 6, denoiser, noise)
    assert ablated.nfe == default.nfe and torch.isfinite(ablated.x).all()
    assert not torch.equal(ablated.x, default.x)
    assert constants() == saved
