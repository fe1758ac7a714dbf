"""Quantization profiles: what a deployment target can run (`trt`, `ort-x86`), or free research
settings (`paper`). Each profile says whether it can be exported and, if not, why."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..errors import UserError
from .grid import check_bits
from .observers import parse_observer

PROFILES = ("trt", "ort-x86", "paper")
NOT_DEPLOYABLE = "profile 'paper' is research fake quantization and not deployable: use --profile trt or ort-x86"


@dataclass
class QuantProfile:
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

    def __post_init__(self) -> None:
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


def parse_bits(bits: str | None, default: tuple[int, int] = (8, 8)) -> tuple[int, int]:
    """'W/A' (e.g. '4/8') → (4, 8); a single number means both; None → default."""
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
    """A profile by name. trt / ort-x86 accept only 8/8 and keep activations symmetric per tensor
    (what the runtimes execute); paper takes any W/A in 2-8 and every option."""
    key = str(name).strip().lower()
    if key not in PROFILES:
        raise UserError(f"unknown quantization profile '{name}': choose one of {', '.join(PROFILES)}")
    w, a = parse_bits(bits)
    if key in ("trt", "ort-x86"):
        if (w, a) != (8, 8):
            raise UserError(
                f"profile '{key}' supports only --bits 8/8 (INT8 runtimes), got {w}/{a}; "
                "use --profile paper for other bit widths"
            )
        if a_symmetric is False or a_per_channel:
            raise UserError(
                f"profile '{key}' needs symmetric per-tensor activations; use --profile paper for others"
            )
        if (w_observer or "minmax") != "minmax":
            # the weight grid is narrow (±127): a clipping observer leaves weights below -127·s, which
            # PyTorch clamps to -127 and ONNX's QuantizeLinear saturates to -128
            raise UserError(f"profile '{key}' quantizes weights with minmax (narrow range ±127), got weight observer "
                            f"'{w_observer}'; use --profile paper for other weight observers")
        # 7-bit weights: ORT's u8s8 kernels saturate full-range int8 weights on CPUs without VNNI.
        return QuantProfile(
            name=key,
            w_bits=7 if key == "ort-x86" else 8,
            a_bits=8,
            w_observer=w_observer or "minmax",
            a_observer=a_observer or "minmax",
            quantize_patch_embed=bool(quantize_patch_embed),
        )
    return QuantProfile(
        name="paper",
        w_bits=w,
        a_bits=a,
        a_symmetric=True if a_symmetric is None else bool(a_symmetric),
        a_per_channel=bool(a_per_channel),
        w_observer=w_observer or "minmax",
        a_observer=a_observer or "minmax",
        quantize_patch_embed=bool(quantize_patch_embed),
        exportable=False,
        export_reason=NOT_DEPLOYABLE,
    )
