"""The real ComfyUI server (main.py --cpu on 127.0.0.1) lists evodiff and runs a prompt over HTTP.

Bounded: one server process on a free loopback port, stopped at the end whatever happens.
"""
import time
import uuid

import pytest

import comfy_harness as h
from comfy_server import get_json, running_server

pytestmark = [pytest.mark.comfy, pytest.mark.slow]
PROMPT_TIMEOUT_S = 60


@pytest.fixture
def server(comfyui, tmp_path):
    with running_server(comfyui.comfy_dir, tmp_path) as url:
        yield url


def test_server_lists_evodiff_and_runs_a_prompt(server):
    info = get_json(server + "/object_info/KSampler")
    assert "evodiff" in info["KSampler"]["input"]["required"]["sampler_name"][0]
    node = get_json(server + f"/object_info/{h.SAMPLER_NODE}")[h.SAMPLER_NODE]
    assert node["output"] == ["SAMPLER"] and "shift" in node["input"]["required"]

    from test_comfy_sampling import ksampler_prompt
    prompt = ksampler_prompt("sd15", steps=4)
    prompt["decode"] = {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["model", 2]}}
    prompt["save"] = {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": "evodiff_http"}}
    del prompt["capture"]
    prompt_id = get_json(server + "/prompt", {"prompt": prompt, "client_id": str(uuid.uuid4())})["prompt_id"]
    deadline = time.monotonic() + PROMPT_TIMEOUT_S
    while time.monotonic() < deadline:
        history = get_json(server + f"/history/{prompt_id}")
        if prompt_id in history and history[prompt_id]["status"].get("completed") is not None:
            break
        time.sleep(0.3)
    else:
        pytest.fail("prompt did not finish in time")
    status = history[prompt_id]["status"]
    assert status["status_str"] == "success", status
    images = history[prompt_id]["outputs"]["save"]["images"]
    assert images and images[0]["filename"].startswith("evodiff_http")
