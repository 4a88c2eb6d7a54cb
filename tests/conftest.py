"""Session fixtures. ComfyUI is booted only when a test asks for `comfyui` (mark those tests
@pytest.mark.comfy), so the core's unit tests run with plain `import evodiff_core`."""
import pytest


@pytest.fixture(scope="session")
def comfyui():
    import comfy_harness

    runtime = comfy_harness.boot()
    yield runtime
    comfy_harness.shutdown(runtime)


@pytest.fixture(scope="session")
def k_sampling():
    """ComfyUI's own k-diffusion samplers (real runtime, no nodes loaded): the measuring sticks."""
    from tools.comfyui_runtime import prepare_comfyui

    prepare_comfyui()
    import comfy.k_diffusion.sampling

    return comfy.k_diffusion.sampling
