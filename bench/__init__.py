"""EVODiff benchmarks: quality per NFE and cost per step against ComfyUI's own samplers.

Command line (from the repo root; `scripts/bench` sets up .venv and OMP_NUM_THREADS=1):

    scripts/bench                      # quick: NFE 5/8/10, 512 samples, ~1 min 45 s, bench_out/
    scripts/bench --full               # docs/benchmarks.md and its figures (NFE 5..25, 2048 samples)
    python -m bench.stress_heldout     # docs/stress.md and the README's headline figure
    scripts/bench --heldout            # the held-out noise seed (quality.HELDOUT_SEED)
    scripts/bench --seed 3 --samplers evodiff:improved,dpmpp_2m --no-cost --out bench_out/try

Python API (the unguided matrix: {EPS karras, EPS normal, flow shift 3} x {mixture, digits}):

    from bench import quality
    records = quality.run_matrix(samplers=["evodiff:improved", "evodiff:reference", "dpmpp_2m"],
                                 nfes=(5, 8, 10), seeds=(quality.HELDOUT_SEED,), n_samples=512)
    print(quality.table(records, "excess_fd", where={"nfe_target": 8}))   # rows samplers, cols cells
    # each record: sampler, cell, nfe_target, nfe (measured), rms, excess_fd, fd_data,
    # fd_converged, changed, and the split-half noise rms_noise / excess_fd_noise

Sampler names: 'evodiff:<variant>' for every name in evodiff_core.VARIANTS (append '@shift=0'
for another shift, e.g. the variance-control ablation in docs/variants.md), and ComfyUI's
built-ins (bench.comfy_samplers.BUILTIN_SAMPLERS); all_samplers() lists both. A variant's
options reach sample_evodiff through KSAMPLER extra_options, exactly as in ComfyUI.
Exact solutions are cached per process, so repeated calls with the same seeds and sizes only
pay for the samplers (about 1 s per sampler and NFE for the six cells at 512 samples).

Modules: comfy_samplers (real ComfyUI schedules/samplers, counting model), problems (the
Gaussian mixture and the learned digits denoiser, exact ODE solutions), metrics, quality,
cost, learned (training: `python -m bench.learned`), report (markdown), figures (plots),
digits_grid (the README's digit picture), stress and stress_heldout (guidance, wide ranges),
calibration (EVODiffCalibrate's schedules against the best built-in: docs/calibration.md).
"""
