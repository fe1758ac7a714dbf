"""Name → spec registries filled from one tuple of module names, each module holding a `SPEC`: the
package's extension points (runtime/backends, quant/profiles) are one module plus one line there.

Nothing here imports torch, numpy or onnx: the CLI builds its help texts from these registries."""

from __future__ import annotations

import importlib
from typing import Generic, Protocol, TypeVar


class _Named(Protocol):
    name: str


S = TypeVar("S", bound=_Named)


class Registry(Generic[S]):
    def __init__(self, package: str, modules: tuple[str, ...]):
        self._package = package
        self._modules = modules
        self._specs: dict[str, S] | None = None

    def _loaded(self) -> dict[str, S]:
        # on first use, not at import: the modules import their package, which holds this registry
        if self._specs is None:
            specs: dict[str, S] = {}
            for module in self._modules:
                spec = importlib.import_module(f"{self._package}.{module}").SPEC
                if spec.name in specs:
                    raise ValueError(f"{self._package}: {spec.name!r} is registered twice")
                specs[spec.name] = spec
            self._specs = specs
        return self._specs

    def register(self, spec: S) -> S:
        """Add a spec without editing the package (a plugin, a test); names stay unique."""
        specs = self._loaded()
        if spec.name in specs:
            raise ValueError(f"{self._package}: {spec.name!r} is registered already")
        specs[spec.name] = spec
        return spec

    def unregister(self, name: str) -> None:
        del self._loaded()[name]

    def specs(self) -> list[S]:
        """In registration order: the order reports and help texts list them in."""
        return list(self._loaded().values())

    def names(self) -> list[str]:
        return list(self._loaded())

    def find(self, name: str) -> S | None:
        return self._loaded().get(name)


def or_list(items) -> str:
    """'a, b or c' (an option's choices in a help text or an error message)."""
    items = list(items)
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"
