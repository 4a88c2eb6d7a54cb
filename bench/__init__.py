"""EVODiff benchmarks: quality per NFE and cost per step against ComfyUI's own samplers.

Command line (from the repo root; `scripts/bench` sets up .venv and OMP_NUM_THREADS=1):

    scripts/bench                      # quick: NFE 5/8/10, 512 samples, ~1 min 45 s, bench_out/
    scripts/bench --full               # docs/benchmarks.md and its figures (NFE 5..25, 2048 samples)
    python -m bench.stress_heldout     # docs/stress.md, its verdict and the README's headline figure
    scripts/bench --heldout            # the held-out noise seed (cells.HELDOUT_SEED)
    scripts/bench --seed 3 --samplers evodiff:improved,dpmpp_2m --no-cost --out bench_out/try

Python API: every benchmark is a list of cells (bench.cells) run by the same machinery:

    from bench import cells, matrix
    records = matrix.run(cells.UNGUIDED, ["evodiff:improved", "dpmpp_2m"], cells.BENCH_QUICK, against_data=True)
    # each record is a cells.Point: sampler, cell, nfe_target, nfe (measured), fd, rms, their split-half
    # noise, changed, the verdicts (bench.verdicts) and, against_data, fd_data / excess_fd

Sampler names: 'evodiff:<variant>' for every name in evodiff_core.VARIANTS (append '@shift=0'
for another shift), 'evodiff@<rev>' and 'evodiff~<rule>' (bench.cores), and ComfyUI's built-ins
(bench.comfy_samplers.BUILTIN_SAMPLERS). Exact solutions are cached per process (bench.solutions).

Modules, from the ground up: common (paths, names, JSON, headers), metrics, learned (training:
`python -m bench.learned`), stability; cores, problems, cells (cells, settings, the record);
comfy_samplers, verdicts (every rule and its words); solutions, figures, cost; matrix, report and
stress_report (markdown), digits_grid; the command lines __main__, stress, stress_heldout,
ablation and calibration.
"""
