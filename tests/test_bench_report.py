"""The benchmark's plain-words report, its last-line verdict, the noise-aware cost verdict and the
figures, on small synthetic records (nothing is sampled or timed)."""
import math

import pytest

from bench import __main__ as bench_main
from bench import cells, cost, figures, report, verdicts
from bench.common import write_json

ME = report.default_variant()
CELLS = ("mixture EPS karras", "digits flow s3")
NFES = (5, 8, 10)


def _record(sampler, cell, nfe, fd=0.5, noise=0.1, rms=0.2, n_samples=512):
    problem = cell.split()[0]
    return dict(sampler=sampler, cell=cell, problem=problem, nfe_target=nfe, nfe=nfe, n_samples=n_samples,
                excess_fd=fd, excess_fd_noise=noise, rms=rms, rms_noise=noise / 10, fd=fd, fd_data=fd + 1,
                changed=3 if problem == "mixture" else None, finite=True)


def _records(n_samples=512, mine=lambda cell, nfe: 0.5):
    """dpmpp_2m and euler at 0.5 everywhere; the default variant at mine(cell, nfe)."""
    out = []
    for cell in CELLS:
        for nfe in NFES:
            out += [_record(ME, cell, nfe, fd=mine(cell, nfe), n_samples=n_samples),
                    _record("dpmpp_2m", cell, nfe, n_samples=n_samples),
                    _record("euler", cell, nfe, fd=0.9, n_samples=n_samples)]
    return out


def _results(records, cost_records=()):
    refs = [dict(problem="mixture", family="eps", scheduler="karras", n=512, ode_steps=100,
                 refinement_rms=1e-6, fd_data=0.2, seconds=1.0)]
    return dict(command="scripts/bench", header="Command: `scripts/bench` (synthetic)\n", seconds=1.0,
                settings=cells.BENCH_QUICK, seed=0, references=refs, quality=records, cost=list(cost_records))


def test_all_ties_in_a_quick_run_say_too_noisy_and_what_to_run():
    text = report.summary(_records())
    assert "too noisy to separate most samplers" in text and "scripts/bench --full" in text
    assert text.count("| no difference beyond noise | no difference beyond noise |") == len(CELLS)
    assert "better at 0, worse at 0, no difference beyond noise at 6" in text
    assert "too noisy" in report.final_verdict(_records(), [])


def test_a_full_run_that_ties_is_not_called_too_noisy():
    text = report.summary(_records(n_samples=2048))
    assert "too noisy" not in text and "agree to within what this benchmark can measure" in text
    assert "too noisy" not in report.final_verdict(_records(n_samples=2048), [])


def test_differences_beyond_noise_are_written_in_plain_words():
    # noise 0.1 each: a difference counts beyond 2 * hypot(0.1, 0.1) = 0.28
    better_low = lambda cell, nfe: 0.1 if cell == CELLS[0] and nfe < 10 else 0.5    # noqa: E731
    found = verdicts.comparisons(_records(mine=better_low), "excess_fd", ME)
    assert found[CELLS[0]]["better"] == [5, 8] and found[CELLS[0]]["tie"] == [10]
    assert verdicts.in_words(found[CELLS[0]]) == "better at 5 and 8 NFE; never worse"
    assert verdicts.in_words(found[CELLS[1]]) == "no difference beyond noise"
    mixed = dict(better=[8, 10], worse=[5], tie=[], measured=[5, 8, 10])
    assert verdicts.in_words(mixed) == "better at 8 and 10 NFE; worse at 5 NFE"
    assert verdicts.in_words(dict(better=[], worse=[5, 8, 10], tie=[], measured=[5, 8, 10])) == "worse at every NFE"
    assert verdicts.nfe_words([5, 6, 8, 10, 25], [5, 6, 8, 10, 12, 25]) == "5–10 and 25 NFE"
    # excess FD counts by its size: -0.45 is as bad as +0.45, and worse than dpmpp_2m's 0.1
    assert verdicts.compare(_record(ME, "c", 5, fd=-0.45, noise=0.01), _record("d", "c", 5, fd=0.1, noise=0.01),
                          "excess_fd") == "worse"
    # one best-of-all rule (bench.verdicts.is_best): an exact tie with the best built-in counts as best
    slightly_worse_at_10 = lambda cell, nfe: 0.1 if cell == CELLS[0] and nfe < 10 else 0.51    # noqa: E731
    table = report.verdicts(_records(mine=slightly_worse_at_10), "excess_fd")
    assert "@" not in table and "–;" not in table
    assert "better at 5 and 8 NFE; never worse; below every built-in at 5 and 8 NFE" in table
    assert "below every built-in at every NFE" in report.verdicts(_records(mine=better_low), "excess_fd")


def test_cost_verdict_compares_the_ratio_spread_with_the_threshold(monkeypatch):
    assert cost.quartiles([1.0, 2.0, 3.0, 4.0, 5.0]) == (2.0, 3.0, 4.0)
    assert cost.quartiles([1.4, 1.9]) == (1.4, pytest.approx(1.65), 1.9)       # 2 repeats: the range
    assert cost.time_verdict(1.2, 1.45) == "below"
    assert cost.time_verdict(1.4, 1.7) == "within noise"
    assert cost.time_verdict(1.55, 2.0) == "above"
    # paired repeats: the sampler takes 1.6x dpmpp_2m's time in every repeat, however noisy both are
    base = [1.0, 3.0, 1.0, 3.0, 2.0]
    fake = {"evodiff:improved": [1.6 * b for b in base], "dpmpp_2m": base, "euler": [0.5 * b for b in base]}
    monkeypatch.setattr(cost, "overhead_per_step", lambda samplers, shape, repeats: {s: fake[s] for s in samplers})
    records = cost.run_cost(("evodiff:improved", "dpmpp_2m", "euler"), shapes=("sd 1x4x128x128",), memory=False)
    mine = records[0]
    assert mine["ratio_to_dpmpp_2m"] == pytest.approx(1.6) and mine["ratio_q1"] == pytest.approx(1.6)
    assert mine["time_verdict"] == "above" and mine["verdict"] == "FAIL"
    assert cost.verdict_text(mine) == "above 1.5×" and cost.verdict_text(records[1]) == ""
    assert "1.60 (IQR 1.60–1.60)" in cost.cost_table(records)
    assert report.cost_summary(records) == ("1.60× dpmpp_2m's per step over 1 latent sizes "
                                            "(above 1.5× beyond noise at 1)")


def _cost_record(ratio, q1, q3, latent):
    return dict(sampler=ME, latent=latent, ms_per_step=1.0, ms_min=0.9, ms_max=1.2, repeats=5,
                ratio_to_dpmpp_2m=ratio, ratio_q1=q1, ratio_q3=q3, extra_buffers=9.0,
                time_verdict=cost.time_verdict(q1, q3), memory_ok=True,
                verdict="FAIL" if cost.time_verdict(q1, q3) == "above" else "PASS")


def test_the_runs_last_line_is_the_verdict_never_a_fail_line(tmp_path, capsys):
    costs = [_cost_record(1.3, 1.1, 1.4, "sd"), _cost_record(1.6, 1.3, 1.9, "flux"),
             _cost_record(1.9, 1.7, 2.1, "video")]
    better = lambda cell, nfe: 0.05      # noqa: E731
    path = tmp_path / "results.json"
    write_json(path, _results(_records(mine=better), costs))
    assert bench_main.main(["--from-results", str(path)]) == 0
    printed = capsys.readouterr().out
    assert "FAIL" not in printed
    last = printed.rstrip("\n").splitlines()[-1]
    assert last == (f"[bench] verdict: {ME} beats dpmpp_2m beyond noise at 6 of 6 points (excess FD), loses at 0; "
                    "cost 1.30–1.90× dpmpp_2m's per step over 3 latent sizes (above 1.5× beyond noise at 1, "
                    "within noise of it at 1, below it at 1)")
    text = (tmp_path / "report.md").read_text()
    assert text.index("## Summary") < text.index("## This run") < text.index("## Quality")
    assert "better at every NFE" in text and "within noise of 1.5×" in text
    assert {p.name for p in tmp_path.iterdir()} == {"results.json", "report.md", "benchmark_fd.png",
                                                    "benchmark_rms.png"}


def _png_size(path):
    from PIL import Image

    with Image.open(path) as image:
        return image.size


def _stress_record(sampler, cell, nfe, fd, cfg=3.0):
    return dict(sampler=sampler, cell=cell, nfe_target=nfe, nfe=nfe, fd=fd, fd_noise=0.01, cfg=cfg,
                finite=True, error=None)


def test_headline_aggregates_guided_cells_by_geometric_mean_against_the_best_builtin(tmp_path):
    records = []
    for cell, scale in (("a", 1.0), ("b", 100.0)):       # very different scales count the same
        for nfe in (5, 10):
            records += [_stress_record("evodiff", cell, nfe, scale * 0.2 / nfe),
                        _stress_record("dpmpp_2m", cell, nfe, scale * (0.4 if cell == "a" else 0.15) / nfe),
                        _stress_record("euler", cell, nfe, scale * 1.0 / nfe)]
    records.append(_stress_record("evodiff", "unguided", 5, 1e9, cfg=None))      # left out: unguided
    agg = figures.headline_figure(records, tmp_path / "headline.png")
    assert agg["cells"] == ["a", "b"] and agg["nfes"] == [5, 10]
    assert agg["lines"]["evodiff"][0] == pytest.approx(math.sqrt(0.2 * 20) / 5)
    # best built-in per cell: dpmpp_2m in both here (0.4 and 15 at NFE 5)
    assert agg["lines"]["best built-in"][0] == pytest.approx(math.sqrt(0.4 / 5 * 15 / 5))
    assert agg["best_single"][0] == ("dpmpp_2m", pytest.approx(math.sqrt(0.4 / 5 * 15 / 5)))
    assert figures.headline_reading(agg) == ("evodiff is below dpmpp_2m at every NFE; below the best built-in per "
                                             "problem at every NFE (geometric means, not noise-checked).")
    assert _png_size(tmp_path / "headline.png") == (1200, 750)       # 8 x 5 in at 150 dpi


def test_cell_figures_are_github_width_and_one_row_per_two_cells(tmp_path):
    records = _records()
    figures.cells_figure(records, tmp_path / "cells.png", "fd", "FD", ME, title="t")
    width, height = _png_size(tmp_path / "cells.png")
    assert width == 1200 and 1.0 * 150 * (3.2 + 1.0) <= height <= 1.02 * 150 * (3.2 + 1.0)


def test_benchmarks_page_opens_with_both_summaries_then_the_method():
    results = _results(_records(n_samples=2048))
    text = report.benchmarks_markdown(results, ("alt", "caption", "head.png"), [("a2", "c2", "f2.png")],
                                      "- guided: won 9\n")
    order = ["## Summary", "![alt](head.png)", "- guided: won 9", "**Unguided cells of this run**", "## Method",
             "![a2](f2.png)", "## This run", "## Every cell by NFE"]
    assert [text.index(s) for s in order] == sorted(text.index(s) for s in order)
    assert "too noisy" not in text and "Do not edit by hand" in text
