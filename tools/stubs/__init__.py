"""Import-only stand-ins for optional packages that cannot load on this machine (tests only).

PyPI's torchvision and torchaudio do not load beside the local CPU torch build. ComfyUI imports
them at module level (0.33: ``torchvision.ops``, ``torchvision.models.optical_flow``,
``torchvision.transforms.functional``, ``torchaudio``) for model families the tests never run.
``install_where_missing()`` first tries the real package; only where that fails does a finder
answer every ``<package>`` and ``<package>.*`` import with a stub module. A stub's attributes can
be imported and named, but calling, subclassing, iterating or computing with one raises
:class:`StubbedModuleUsed`, naming the attribute and why the real package did not load.
Self-contained (standard library only): the server smoke test loads this file by path.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types

OPTIONAL_PACKAGES = ("torchvision", "torchaudio")


class StubbedModuleUsed(RuntimeError):
    """Raised when the tests use (not just import) a stubbed-out package."""


def _raise_used(name: str, how: str):
    finder = _installed_finder()
    reason = finder.reasons.get(name.partition(".")[0], "unknown") if finder else "unknown"
    raise StubbedModuleUsed(f"{name.partition('.')[0]} is stubbed out in the test harness: {name} {how}. "
                            f"The real package did not import ({reason}); see tools/stubs/__init__.py.")


class StubAttribute:
    """Any attribute of a stub module: can be imported and named; any use raises."""

    __slots__ = ("_stub_name",)

    def __init__(self, name: str):
        object.__setattr__(self, "_stub_name", name)

    def __getattr__(self, attr):
        if attr.startswith("__"):   # protocol probes (copy, pickle, inspect) get the usual answer
            raise AttributeError(attr)
        return StubAttribute(f"{self._stub_name}.{attr}")

    def __repr__(self):
        return f"<stub {self._stub_name}>"

    def __mro_entries__(self, bases):
        _raise_used(self._stub_name, "was subclassed")

    def __setattr__(self, attr, value):
        _raise_used(self._stub_name, f"had .{attr} set")


def _used_by(how: str):
    def use(self, *args, **kwargs):
        _raise_used(self._stub_name, how)
    return use


for _dunder, _how in {"__call__": "was called", "__bool__": "was tested for truth", "__iter__": "was iterated",
                      "__len__": "was asked its length", "__getitem__": "was indexed", "__contains__": "was searched",
                      "__enter__": "was entered", "__int__": "was converted", "__float__": "was converted",
                      "__index__": "was converted"}.items():
    setattr(StubAttribute, _dunder, _used_by(_how))
for _op in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "lt", "le", "gt", "ge"):
    setattr(StubAttribute, f"__{_op}__", _used_by(f"was used in arithmetic ({_op})"))
    setattr(StubAttribute, f"__r{_op}__", _used_by(f"was used in arithmetic ({_op})"))


class StubModule(types.ModuleType):
    """A stub package: every non-dunder attribute is a StubAttribute."""

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(f"stub module {self.__name__!r} has no attribute {attr!r}")
        return StubAttribute(f"{self.__name__}.{attr}")


class StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers imports of the stubbed packages and all their submodules with StubModules."""

    def __init__(self):
        self.reasons: dict[str, str] = {}   # package → why its real import failed

    def find_spec(self, fullname, path=None, target=None):
        if fullname.partition(".")[0] in self.reasons:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        return StubModule(spec.name)

    def exec_module(self, module):
        pass


def _installed_finder() -> StubFinder | None:
    # by class name: the server smoke test loads this file a second time, under another name
    return next((f for f in sys.meta_path if type(f).__name__ == "StubFinder"), None)


def _forget(package: str) -> None:
    """Drop what a failed import left in sys.modules (a half-initialised package)."""
    for name in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
        del sys.modules[name]


def install_where_missing(packages=OPTIONAL_PACKAGES) -> tuple[str, ...]:
    """Stub each package whose real import fails; return the packages that are stubbed.

    Idempotent. A package that imports for real is never touched."""
    finder = _installed_finder()
    for package in packages:
        if finder is not None and package in finder.reasons:
            continue
        try:
            importlib.import_module(package)
        except Exception as error:  # missing, or a build that cannot load beside this torch
            _forget(package)
            if finder is None:
                finder = StubFinder()
                sys.meta_path.insert(0, finder)
            finder.reasons[package] = f"{type(error).__name__}: {error}"
    return tuple(p for p in packages if finder is not None and p in finder.reasons)
