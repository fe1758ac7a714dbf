"""The backends a bundle runs on, one module each with a `SPEC`; `MODULES` is the registry.

Everything that names backends reads this registry: open_runner, bench's (backend, precision)
pairs and their planning, validate's and eval's backend resolution, the `--backend` help texts.
Adding a backend is one module here plus one line in `MODULES` (CONTRIBUTING.md shows one).
The spec modules stay cheap to import (their runner loads inside `open`): the CLI reads them
for its help."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ...errors import UserError
from ...registry import Registry, or_list

# one line per backend, in report order (bench tables, help texts)
MODULES = (
    "torch_ref",
    "ort",
    "ort_exact",
    "trt",
)
DEFAULT = "ort-exact"  # what a bundle runs on when no --backend is given (eval, predict)
RUNS_ON = ("torch", "cpu", "gpu")


@dataclass(frozen=True)
class BackendSpec:
    name: str
    help: str  # one line, for --help
    # (bundle, device, **opts) -> a runtime.base.Runner named `name`; `device` is --device's
    # torch device (None: not given), which only `runs_on="torch"` backends use
    open: Callable
    # torch: PyTorch on --device's torch device (the runner has forward/to_device for GPU timing);
    # cpu: always the CPU, also on a GPU machine; gpu: the GPU, benched only on cuda/jetson
    runs_on: str
    bench: tuple[str, ...] = ()  # the precisions `bench` times, in report order
    bench_opt_in: tuple[str, ...] = ()  # of those, timed only when --backends names them
    threads: bool = False  # takes bench's --threads (intra-op threads)
    reference: bool = False  # the PyTorch reference: what validate compares the others with
    tensorrt: bool = False  # runs a TensorRT engine: bench builds it first, validate reads its graph
    ort_mode: str | None = None  # `validate --backend ort --ort-mode MODE` picks the backend with this MODE
    rounding_replay: bool = False  # a failed int8 validation is replayed with ORT's rounding ties

    def __post_init__(self) -> None:
        if self.runs_on not in RUNS_ON:
            raise ValueError(f"backend {self.name!r}: runs_on must be one of {RUNS_ON}, got {self.runs_on!r}")
        if not set(self.bench_opt_in) <= set(self.bench):
            raise ValueError(f"backend {self.name!r}: bench_opt_in {self.bench_opt_in} is not within bench {self.bench}")


REGISTRY: Registry[BackendSpec] = Registry(__name__, MODULES)


def backend_specs() -> list[BackendSpec]:
    return REGISTRY.specs()


def backend_spec(name: str) -> BackendSpec:
    spec = REGISTRY.find(name)
    if spec is None:
        raise UserError(f"unknown backend '{name}' (expected one of: {', '.join(REGISTRY.names())})")
    return spec


def find_backend(name: str) -> BackendSpec | None:
    return REGISTRY.find(name)


def reference_spec() -> BackendSpec:
    return next(s for s in REGISTRY.specs() if s.reference)


def compared_specs() -> list[BackendSpec]:
    """The backends validate compares with the reference."""
    return [s for s in REGISTRY.specs() if not s.reference]


def choices_help(specs: list[BackendSpec] | None = None, notes: dict[str, str] | None = None) -> str:
    """'torch (its help), ort (its help; NOTE) or trt (its help)': a --backend option's choices."""
    notes = notes or {}
    return or_list(f"{s.name} ({'; '.join(filter(None, [s.help, notes.get(s.name)]))})"
                   for s in (backend_specs() if specs is None else specs))
