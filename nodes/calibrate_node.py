"""EVODiffCalibrate: a SIGMAS schedule for SamplerCustom / SamplerCustomAdvanced, learned on the
connected model with its cfg and conditioning, and the SamplerEVODiff it was learned for (its
shift is calibrated too; the method: evodiff_core/calibrate.py).

It runs through ComfyUI's own CFGGuider, as SamplerCustomAdvanced does, so the calibration sees
the denoiser the sampler will see. What it learns is saved under ComfyUI's user directory,
``<user>/evodiff/calibration/<key>.json``, so the same inputs cost nothing the second time.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path

import comfy.model_management
import comfy.sample
import comfy.samplers
import comfy.utils
import folder_paths
import torch
from comfy_api.latest import io

from ..evodiff_core import calibrate as core_calibrate
from ..evodiff_core.calibrate import SHIFTS, default_max_calls
from .sampler_function import noise_schedule_of
from .sampler_node import SEARCH_ALIASES, evodiff_sampler, newer_schema_fields
from .stock_schedules import stock_schedules

log = logging.getLogger(__name__)

NODE_ID = "EVODiffCalibrate"   # stable: saved workflows refer to it
CATEGORY = "sampling/custom_sampling/schedulers"   # beside BasicScheduler, AlignYourSteps, GITS
STEPS_MIN, STEPS_MAX, STEPS_DEFAULT = 3, 16, 6
SAMPLES_MIN, SAMPLES_MAX, SAMPLES_DEFAULT = 1, 64, 4
CFG_MAX = 100.0
CACHE_FOLDER = ("evodiff", "calibration")
CORE_DIR = Path(__file__).resolve().parent.parent / "evodiff_core"

DESCRIPTION = (
    "Learns a few-step sigma schedule for EVODiff on this model, at this cfg and resolution, in a few "
    "hundred model calls, with the sampler's shift, and keeps it only if it beats ComfyUI's stock schedules "
    "on held-out samples. Connect SIGMAS and SAMPLER to SamplerCustomAdvanced or SamplerCustom. Saved in "
    "the user directory (evodiff/calibration): the same inputs cost nothing the second time.")
STEPS_TOOLTIP = "Sampler steps (model calls) the schedule is made for: 3-16; it pays most at 5-8."
SAMPLES_TOOLTIP = ("Noise samples the calibration runs on, as one batch: half to fit, half held out for the "
                   "check against the stock schedules. More is steadier, and each model call costs more.")
CFG_TOOLTIP = "The cfg you sample with: the calibration runs the guided model, so the schedule is made for it."
SEED_TOOLTIP = "Seed of the calibration noise (not the image's). Change it to calibrate afresh."


def _input_error(cfg=None, steps=None, samples=None) -> str | None:
    """What is wrong with the widget values, naming this node and saying what to change; None if fine.
    None (a linked input, unknown at queue time) is not checked."""
    problems = []
    if steps is not None and not (isinstance(steps, int) and STEPS_MIN <= steps <= STEPS_MAX):
        problems.append(f"steps must be a whole number from {STEPS_MIN} to {STEPS_MAX}, got {steps!r}")
    if samples is not None and not (isinstance(samples, int) and SAMPLES_MIN <= samples <= SAMPLES_MAX):
        problems.append(f"samples must be a whole number from {SAMPLES_MIN} to {SAMPLES_MAX}, got {samples!r}")
    if cfg is not None and not (isinstance(cfg, (int, float)) and math.isfinite(cfg) and 0 <= cfg <= CFG_MAX):
        problems.append(f"cfg must be a number from 0 to {CFG_MAX:g} (the cfg you sample with), got {cfg!r}")
    return f"{NODE_ID}: {'; '.join(problems)}" if problems else None


def core_digest() -> str:
    """The solver's source: a change of the step rule invalidates every saved schedule."""
    digest = hashlib.sha256()
    for path in sorted(CORE_DIR.glob("*.py")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def _tensor_sample(tensor) -> list:
    """dtype, shape and the first and last values; only the first two for tensors whose values
    cannot be read cheaply (meta tensors, quantised custom types)."""
    described = [str(getattr(tensor, "dtype", type(tensor).__name__)), list(getattr(tensor, "shape", []))]
    try:
        flat = tensor.detach().flatten()
        return described + [flat[:4].float().tolist(), flat[-4:].float().tolist()]
    except Exception:  # noqa: BLE001 - a fingerprint must never stop the calibration
        return described


def model_fingerprint(model) -> str:
    """Which weights and patches the model has, cheaply: every tensor's name, shape, dtype and its
    first and last values, the patches (LoRA...) with their strengths, the model_sampling's range."""
    digest = hashlib.sha256()
    for name, tensor in model.model.state_dict().items():
        digest.update(json.dumps([name, *_tensor_sample(tensor)]).encode())
    for key in sorted(model.patches):
        for patch in model.patches[key]:
            digest.update(json.dumps([key, float(patch[0]), float(patch[2]) if len(patch) > 2 else 1.0]).encode())
    sampling = model.get_model_object("model_sampling")
    digest.update(json.dumps([type(sampling).__name__, float(sampling.sigma_max), float(sampling.sigma_min)]).encode())
    return digest.hexdigest()


def cache_key(model, latent_shape, cfg, steps, samples, seed) -> dict:
    sampling = model.get_model_object("model_sampling")
    return {"model": model_fingerprint(model), "latent": list(latent_shape[1:]), "cfg": float(cfg), "steps": steps,
            "samples": samples, "seed": seed, "sigma_max": float(sampling.sigma_max),
            "sigma_min": float(sampling.sigma_min), "core": core_digest()}


def cache_file(key: dict) -> Path:
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    return Path(folder_paths.get_user_directory(), *CACHE_FOLDER, f"{name}.json")


def load_saved(key: dict) -> tuple[torch.Tensor, float] | None:
    path = cache_file(key)
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if saved.get("key") != key or "shift" not in saved:   # a hash collision or a hand-edited file
        return None
    log.info("%s: reusing the schedule saved in %s (%s)", NODE_ID, path, saved.get("chosen"))
    return torch.tensor(saved["sigmas"], dtype=torch.float32), float(saved["shift"])


def save(key: dict, result) -> Path:
    path = cache_file(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"key": key, "sigmas": result.sigmas.tolist(), "shift": result.shift, "chosen": result.chosen,
              "shifts": {f"{mu:g}": errors for mu, errors in result.shifts.items()},
              "model_calls": result.model_calls, "errors": result.errors, "skipped": result.skipped}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(path)   # never a half-written file for the next queue
    return path


def calibrate_on_guider(model, positive, negative, cfg, latent_samples, steps, samples, seed):
    """Run the core's calibration inside CFGGuider.sample, on the denoiser a sampler would get."""
    sampling = model.get_model_object("model_sampling")
    stock = stock_schedules(sampling, steps)
    max_calls = default_max_calls(steps)
    bar = comfy.utils.ProgressBar(max_calls)
    found = {}

    def progress(done, total):
        comfy.model_management.throw_exception_if_processing_interrupted()
        bar.update_absolute(done, total)

    def calibration_sampler(denoiser, x, sigmas, extra_args=None, callback=None, disable=None):
        # x is ComfyUI's start latent, sigma_max times the noise (EPS models: sqrt(1 + sigma_max^2) times)
        found["result"] = core_calibrate(
            denoiser, x / float(sigmas[0]), steps, float(sampling.sigma_max), float(sampling.sigma_min),
            noise_schedule=noise_schedule_of(sampling), extra_args=extra_args, progress=progress,
            candidates=stock, max_calls=max_calls, shifts=SHIFTS)
        return x

    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(positive, negative)
    guider.set_cfg(cfg)
    shape = (samples, *latent_samples.shape[1:])
    latent = comfy.sample.fix_empty_latent_channels(model, torch.zeros(shape, dtype=latent_samples.dtype))
    noise = comfy.sample.prepare_noise(latent, seed)
    guider.sample(noise, latent, comfy.samplers.KSAMPLER(calibration_sampler), stock["karras"], disable_pbar=True,
                  seed=seed)
    return found["result"]


class EVODiffCalibrate(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=NODE_ID,
            display_name="EVODiff Calibrate (schedule)",
            category=CATEGORY,
            description=DESCRIPTION,
            inputs=[
                io.Model.Input("model"),
                io.Conditioning.Input("positive"),
                io.Conditioning.Input("negative"),
                io.Float.Input("cfg", default=5.0, min=0.0, max=CFG_MAX, step=0.1, round=0.01, tooltip=CFG_TOOLTIP),
                io.Latent.Input("latent", tooltip="The latent you will sample (only its size is used)."),
                io.Int.Input("steps", default=STEPS_DEFAULT, min=STEPS_MIN, max=STEPS_MAX, tooltip=STEPS_TOOLTIP),
                io.Int.Input("samples", default=SAMPLES_DEFAULT, min=SAMPLES_MIN, max=SAMPLES_MAX,
                             tooltip=SAMPLES_TOOLTIP),
                io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff, control_after_generate=True,
                             tooltip=SEED_TOOLTIP),
            ],
            outputs=[io.Sigmas.Output(),
                     io.Sampler.Output(tooltip="SamplerEVODiff with the shift the schedule was learned for.")],
            **newer_schema_fields(SEARCH_ALIASES + ["calibrate", "schedule", "optimal steps", "ays", "gits"]),
        )

    @classmethod
    def validate_inputs(cls, cfg=None, steps=None, samples=None, **_) -> bool | str:
        """Checked when the prompt is queued (ComfyUI skips its own min/max for inputs named here)."""
        return _input_error(cfg, steps, samples) or True

    @classmethod
    def execute(cls, model, positive, negative, cfg, latent, steps, samples, seed) -> io.NodeOutput:
        error = _input_error(cfg, steps, samples)
        if error:
            raise ValueError(error)
        if not isinstance(latent, dict) or not isinstance(latent.get("samples"), torch.Tensor) \
                or latent["samples"].dim() < 3:
            raise ValueError(f"{NODE_ID}: latent must be a LATENT (e.g. from Empty Latent Image); only its size "
                             "is used.")
        key = cache_key(model, latent["samples"].shape, cfg, steps, samples, seed)
        saved = load_saved(key)
        if saved is not None:
            sigmas, shift = saved
            return io.NodeOutput(sigmas, evodiff_sampler(shift))
        result = calibrate_on_guider(model, positive, negative, cfg, latent["samples"], steps, samples, seed)
        path = save(key, result)
        log.info("%s; saved in %s", result.summary(), path)
        return io.NodeOutput(result.sigmas, evodiff_sampler(result.shift))
