"""Which (backend, precision) rows a bench times, from the backend registry (runtime/backends):
each backend's `bench` precisions in registry order. Cheap to import: the CLI's help reads it."""

from __future__ import annotations

from ..config import comma_list
from ..errors import UserError
from ..registry import or_list
from ..runtime.backends import backend_spec, backend_specs

GPU_DEVICES = ("cuda", "jetson")
# Half precision on a CPU is not a deployment target: opt-in with --backends there.
HALF = ("fp16", "bf16")


def bench_pairs(device: str | None = None) -> list[tuple[str, str]]:
    """(backend, precision) in report order; the GPU backends' only on a GPU device (None: every pair)."""
    return [(s.name, p) for s in backend_specs() if device is None or device in GPU_DEVICES or s.runs_on != "gpu"
            for p in s.bench]


def opt_in_pairs(device: str) -> list[tuple[str, str]]:
    """The pairs timed only when --backends names them: each backend's bench_opt_in, and on a CPU
    or Jetson bench the half-precision rows that would run on the CPU."""
    return [(b, p) for b, p in bench_pairs(device) if p in backend_spec(b).bench_opt_in
            or (device != "cuda" and backend_spec(b).runs_on != "gpu" and p in HALF)]


def parse_backends(text: str | None) -> list | None:
    if text is None:
        return None
    known = {f"{b}/{p}" for b, p in bench_pairs()}
    chosen = comma_list(text, "--backends", "ort/int8,ort/fp32")
    unknown = [c for c in chosen if c not in known]
    if unknown:
        raise UserError(f"unknown backend {unknown[0]!r}; choose from {', '.join(sorted(known))}")
    return chosen


def plan_backends(device: str, chosen: list | None) -> tuple[list[tuple[str, str]], list[dict]]:
    """The (backend, precision) pairs to time in report order, and those left out with a reason.
    On cuda the CPU-only rows are left out unless asked for (then they run, labelled cpu)."""
    pairs = bench_pairs(device)
    if chosen is not None:
        return [p for p in pairs if f"{p[0]}/{p[1]}" in chosen], []
    left_out = [p for p in pairs if device == "cuda" and backend_spec(p[0]).runs_on == "cpu"]
    skipped = [{"backend": b, "precision": p, "reason": f"CPU only ({backend_spec(b).help}), not a GPU number: "
                f"ask for it with --backends {b}/{p} to time it on this machine's CPU"} for b, p in left_out]
    opt_in = opt_in_pairs(device)
    return [p for p in pairs if p not in opt_in and p not in left_out], skipped


def backends_help() -> str:
    """The --backends help: every pair, and which are opt-in."""
    pairs = [f"{b}/{p}" for b, p in bench_pairs()]
    asked = [f"{b}/{p}" for b, p in bench_pairs() if p in backend_spec(b).bench_opt_in]
    return f"Only these, of {', '.join(pairs)}. Timed only when named here: {', '.join([*asked, 'half precision on a CPU'])}."


def threads_help() -> str:
    return f"Intra-op threads of the {or_list(s.name for s in backend_specs() if s.threads)} rows (default: the runtime's choice)."
