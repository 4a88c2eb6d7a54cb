"""EVODiff benchmarks: quality per NFE and cost per step against ComfyUI's own samplers.

Commands: `scripts/bench`, `scripts/stress` and the CLI modules (stress_heldout, ablation, calibration,
digits_grid, stability, learned); each module's first line says what it is. Every benchmark is a list of
cells (bench.cells) over the same machinery:

    from bench import cells, matrix
    records = matrix.run(cells.UNGUIDED, ["evodiff:improved", "dpmpp_2m"], cells.BENCH_QUICK, against_data=True)

Sampler names: 'evodiff' (the pack's KSampler function), 'evodiff:<variant>[@shift=x]' (the core's
variants), 'evodiff@<rev>' and 'evodiff~<rule>' (bench.cores), and ComfyUI's built-ins.
"""
