"""Import-only stand-in for torchvision, used by the tests only when the real one cannot load.

PyPI's torchvision does not load beside the local CPU torch build, and ComfyUI imports it at
module level only for a few model families (cosmos, cascade, ace) that the tests never run.
Any real use fails loudly.
"""


def __getattr__(name):
    raise AttributeError(f"torchvision.{name} is not available (import-only test stub)")
