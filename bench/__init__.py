"""EVODiff benchmarks: quality per NFE and cost per step against ComfyUI's own samplers.

Commands: `scripts/bench` (quick, bench_out/), `scripts/bench --full` (docs/benchmarks.md),
`python -m bench.stress_heldout` (docs/stress.md, the README's headline figure), `scripts/stress`,
`python -m bench.ablation`, `python -m bench.calibration`; each module's first line says what it is.

Python API: every benchmark is a list of cells (bench.cells) over the same machinery:

    from bench import cells, matrix
    records = matrix.run(cells.UNGUIDED, ["evodiff:improved", "dpmpp_2m"], cells.BENCH_QUICK, against_data=True)

Sampler names: 'evodiff' (the pack's KSampler function), 'evodiff:<variant>[@shift=x]' (the core's
variants), 'evodiff@<rev>' and 'evodiff~<rule>' (bench.cores), and ComfyUI's built-ins.
"""
