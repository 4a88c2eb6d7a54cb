"""The unguided matrix through bench.matrix (the benchmark's Python API) and its markdown tables, tiny."""
import math

import pytest

from bench import cells, matrix, report

pytestmark = pytest.mark.comfy


@pytest.fixture(scope="module")
def records():
    unguided = [cells.UNGUIDED[0], cells.UNGUIDED[5]]          # mixture EPS karras, digits flow
    settings = cells.Settings(nfes=(5, 6), n_samples=16, ode_steps=20, seeds=(cells.HELDOUT_SEED,))
    return matrix.run(unguided, ["evodiff:reference", "heun"], settings, against_data=True)


def test_run_matrix_returns_one_finite_record_per_combination(records):
    assert len(records) == 2 * 2 * 2
    for r in records:
        assert r["finite"] and r["n_samples"] == 16 and r["seeds"] == [cells.HELDOUT_SEED]
        assert all(math.isfinite(r[k]) for k in ("rms", "excess_fd", "fd_data", "fd", "rms_noise"))
        assert (r["changed"] is None) == (r["problem"] == "digits")
    heun6 = next(r for r in records if r["sampler"] == "heun" and r["nfe_target"] == 6)
    assert heun6["nfe"] == 5 and heun6["steps"] == 3


def test_tables_mark_the_best_and_the_achieved_nfe(records):
    text = report.table(records, "rms", columns="nfe_target", where={"cell": "mixture EPS karras"})
    lines = text.splitlines()
    assert lines[0] == "| sampler | 5 | 6 |" and len(lines) == 4
    assert "@5" in next(line for line in lines if line.startswith("| heun"))
    assert text.count("**") == 4                          # one bold best per column
    table = report.table(records, "excess_fd", where={"nfe_target": 5})
    assert table.splitlines()[0] == "| sampler | mixture EPS karras | digits flow s3 |"
