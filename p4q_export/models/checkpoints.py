"""Weights files as users have them, read without running a pickle:

- open_clip's and PyTorch's state dicts (`.pt`, `.pth`, `.bin`), also wrapped as {"state_dict": ...}
  or saved from DistributedDataParallel (`module.` prefixes): `torch.load(weights_only=True)`;
- `.safetensors`;
- OpenAI's released CLIP files, which are TorchScript archives: `torch.jit.load` restores the
  archive (TorchScript objects, not arbitrary Python pickles) and only its parameters and buffers
  are kept; none of its methods is called. `torch.load` refuses these files under `weights_only`.

open_clip then loads the weights into the architecture the user named (`ARCH:FILE`), with its own
conversions (OpenAI key names, position-embedding resizing)."""

from __future__ import annotations

import contextlib
import tempfile
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path

import torch

from ..errors import UserError

WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")
# OpenAI's archives store these scalars beside the weights (open_clip drops them too), and a traced
# module keeps the causal mask, which open_clip rebuilds as a non-persistent buffer
_NOT_WEIGHTS = ("input_resolution", "context_length", "vocab_size", "attn_mask")


def is_torchscript(path: Path) -> bool:
    """A TorchScript archive: a zip holding constants.pkl (what torch.load itself checks)."""
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("constants.pkl") for n in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def read_state_dict(path: Path | str) -> dict[str, torch.Tensor]:
    """The tensors in `path`, or a UserError naming the file and what is wrong with it."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"model checkpoint not found: {p}")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(p), device="cpu")
        elif is_torchscript(p):
            with warnings.catch_warnings():  # torch deprecates TorchScript; OpenAI's files are still that
                warnings.simplefilter("ignore", FutureWarning)
                sd = dict(torch.jit.load(str(p), map_location="cpu").state_dict())
            for key in _NOT_WEIGHTS:
                sd.pop(key, None)
        else:
            sd = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch and safetensors raise several types for truncated or foreign files
        raise UserError(f"{p} is not a readable checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})") from None
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not any(isinstance(v, torch.Tensor) for v in sd.values()):
        raise UserError(f"{p} holds no model weights")
    if all(isinstance(k, str) and k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


@contextlib.contextmanager
def loadable_by_open_clip(path: Path | str) -> Iterator[str]:
    """A path open_clip can load with `weights_only`: the file itself, or, for a TorchScript
    archive, its weights saved as a plain state dict in a temporary folder."""
    p = Path(path)
    if not is_torchscript(p):
        read_state_dict(p)  # a clear error for a truncated or foreign file before open_clip sees it
        yield str(p)
        return
    sd = read_state_dict(p)
    with tempfile.TemporaryDirectory(prefix="p4q-weights-") as tmp:
        plain = Path(tmp) / "state_dict.pt"
        torch.save(sd, plain)
        del sd
        yield str(plain)
