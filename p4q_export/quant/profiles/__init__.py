"""Quantization profiles: what a deployment target can run (`trt`, `ort-x86`), or free research
settings (`paper`). Each is a declarative ProfileSpec in its own module; `MODULES` is the registry.
`get_profile` resolves a spec with the user's --bits and observers into the QuantProfile the
quantizers read and manifests record. Adding a profile is one module here plus one line in
`MODULES` (CONTRIBUTING.md shows one).

Cheap to import (grid and observers, which load torch, are imported where they check): the CLI
builds its help texts from the registry."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ...errors import UserError
from ...registry import Registry, or_list

# one line per profile, in the order help texts and errors list them
MODULES = (
    "trt",
    "ort_x86",
    "paper",
)
DEFAULT = "trt"  # export of a bare MODEL without --profile


@dataclass(frozen=True)
class ProfileSpec:
    name: str
    help: str  # one line, for --help and the refusals
    bits: tuple[int, int] | None = (8, 8)  # the one W/A it takes (and --bits' default); None: any in 2-8
    weight_bits: int | None = None  # the weight grid when it differs from --bits' W (ort-x86: 7)
    w_symmetric: bool = True
    w_per_channel: bool = True  # one scale per output channel (axis 0 of Linear and Conv2d weights)
    w_narrow_range: bool = True  # symmetric weights on ±(2^(b-1)-1): -w quantizes to -q (TensorRT)
    a_symmetric: bool | None = True  # None: the caller chooses (recipe act_symmetric; default True)
    a_per_channel: bool | None = False  # None: the caller chooses (recipe act_per_channel; default False)
    weight_observers: tuple[str, ...] | None = ("minmax",)  # the weight observers it allows; None: any
    not_exportable: str | None = None  # what it is, said when export refuses it; None: exportable
    deploy_precision: str = "int8"  # export's default deploy graph (deploy/precision.py)

    @property
    def exportable(self) -> bool:
        return self.not_exportable is None


@dataclass
class QuantProfile:
    """A spec resolved with the user's options: what the quantizers read, what manifests record
    (`as_dict`) and rebuild the reference from (older manifests lack the later fields)."""

    name: str
    w_bits: int
    a_bits: int
    w_symmetric: bool = True
    a_symmetric: bool = True
    w_per_channel: bool = True
    a_per_channel: bool = False
    w_observer: str = "minmax"
    a_observer: str = "minmax"
    quantize_patch_embed: bool = False
    exportable: bool = True
    export_reason: str | None = None  # why not exportable (None when it is)
    w_narrow_range: bool = True

    def __post_init__(self) -> None:
        # here, not at import: grid and observers load torch
        from ..grid import check_bits
        from ..observers import parse_observer

        check_bits(self.w_bits, "weight bits")
        check_bits(self.a_bits, "activation bits")
        parse_observer(self.w_observer)
        parse_observer(self.a_observer)

    @property
    def bits(self) -> str:
        """'W/A' as the quantizers use it (ort-x86: '7/8')."""
        return f"{self.w_bits}/{self.a_bits}"

    def as_dict(self) -> dict:
        return asdict(self)

    def require_exportable(self) -> None:
        if not self.exportable:
            raise UserError(self.export_reason or f"profile '{self.name}' cannot be exported")


REGISTRY: Registry[ProfileSpec] = Registry(__name__, MODULES)


def profile_specs(exportable: bool | None = None) -> list[ProfileSpec]:
    return [s for s in REGISTRY.specs() if exportable is None or s.exportable == exportable]


def find_profile(name: str) -> ProfileSpec | None:
    return REGISTRY.find(str(name).strip().lower())


def choices_help(exportable: bool | None = None) -> str:
    """'trt (its help), ort-x86 (its help) or paper (its help)': a --profile/--quant option's choices."""
    return or_list(f"{s.name} ({s.help})" for s in profile_specs(exportable))


def _use_instead(fits, what: str) -> str:
    """'; use --profile paper for WHAT' naming the profiles that `fits`, or '' when none does."""
    names = [s.name for s in REGISTRY.specs() if fits(s)]
    return f"; use --profile {or_list(names)} for {what}" if names else ""


def parse_bits(bits: str | None, default: tuple[int, int] = (8, 8)) -> tuple[int, int]:
    """'W/A' (e.g. '4/8') → (4, 8); a single number means both; None → default."""
    from ..grid import check_bits

    if bits is None:
        return default
    text = str(bits).strip()
    parts = text.split("/")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise UserError(f"--bits must look like W/A (e.g. 8/8, 4/4, 4/8), got '{bits}'") from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2:
        raise UserError(f"--bits must look like W/A (e.g. 8/8, 4/4, 4/8), got '{bits}'")
    w, a = values
    check_bits(w, "weight bits")
    check_bits(a, "activation bits")
    return w, a


def _chosen(fixed: bool | None, asked: bool | None, default: bool) -> bool:
    return fixed if fixed is not None else (default if asked is None else bool(asked))


def get_profile(
    name: str,
    bits: str | None = None,
    *,
    w_observer: str | None = None,
    a_observer: str | None = None,
    quantize_patch_embed: bool | None = None,
    a_symmetric: bool | None = None,
    a_per_channel: bool | None = None,
) -> QuantProfile:
    """A profile by name, resolved with these options. What its spec fixes (bits, activation
    layout, weight observers) it refuses to change, naming the profiles that take other values."""
    key = str(name).strip().lower()
    spec = REGISTRY.find(key)
    if spec is None:
        raise UserError(f"unknown quantization profile '{name}': choose one of {', '.join(REGISTRY.names())}")
    w, a = parse_bits(bits, spec.bits or (8, 8))
    if spec.bits is not None and (w, a) != spec.bits:
        raise UserError(f"profile '{key}' ({spec.help}) supports only --bits {spec.bits[0]}/{spec.bits[1]}, got {w}/{a}"
                        + _use_instead(lambda s: s.bits is None, "other bit widths"))
    for fixed, asked in ((spec.a_symmetric, a_symmetric), (spec.a_per_channel, a_per_channel)):
        if fixed is not None and asked is not None and bool(asked) != fixed:
            layout = " ".join(word for value, word in ((spec.a_symmetric, "symmetric" if spec.a_symmetric else "asymmetric"),
                                                       (spec.a_per_channel, "per-channel" if spec.a_per_channel else "per-tensor"))
                              if value is not None)
            raise UserError(f"profile '{key}' needs {layout} activations"
                            + _use_instead(lambda s: s.a_symmetric is None or s.a_per_channel is None, "others"))
    w_bits = spec.weight_bits or w
    w_observer = w_observer or "minmax"
    if spec.weight_observers is not None and w_observer.strip().lower().partition(":")[0] not in spec.weight_observers:
        grid = f" (narrow range ±{2 ** (w_bits - 1) - 1})" if spec.w_symmetric and spec.w_narrow_range else ""
        raise UserError(f"profile '{key}' quantizes weights with {or_list(spec.weight_observers)}{grid}, got weight observer "
                        f"'{w_observer}'" + _use_instead(lambda s: s.weight_observers is None, "other weight observers"))
    reason = None
    if not spec.exportable:
        reason = (f"profile '{key}' is {spec.not_exportable} and not deployable: "
                  f"use --profile {or_list(s.name for s in profile_specs(exportable=True))}")
    return QuantProfile(
        name=key,
        w_bits=w_bits,
        a_bits=a,
        w_symmetric=spec.w_symmetric,
        a_symmetric=_chosen(spec.a_symmetric, a_symmetric, True),
        w_per_channel=spec.w_per_channel,
        a_per_channel=_chosen(spec.a_per_channel, a_per_channel, False),
        w_narrow_range=spec.w_narrow_range,
        w_observer=w_observer,
        a_observer=a_observer or "minmax",
        quantize_patch_embed=bool(quantize_patch_embed),
        exportable=spec.exportable,
        export_reason=reason,
    )
