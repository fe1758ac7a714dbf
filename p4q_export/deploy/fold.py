"""Folding: the text side runs once at export time; its class embeddings (learned prompts through
the text tower, or the zero-shot template ensemble) are normalized, scaled by the logit scale and
become the last MatMul of an image → logits network:

    [uint8 → (x/255 − mean)/std]? → quantized image tower → (QAdapter | normalize) → @ (s·Wᵀ)

`DeployModel` is both what gets exported to ONNX and the PyTorch reference rebuilt from a bundle.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..config import CALIB_IMAGES, CALIB_SEED
from ..errors import UserError

log = logging.getLogger(__name__)


class InputNormalize(nn.Module):
    """uint8 NCHW 0-255 → (x/255 − mean)/std, as one Mul + Add (folded --uint8-input preprocessing)."""

    def __init__(self, mean, std):
        super().__init__()
        std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("mul", 1.0 / (255.0 * std_t))
        self.register_buffer("add", -mean_t / std_t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(torch.float32) * self.mul + self.add


class FoldedHead(nn.Module):
    """logits = f · (logit_scale · E)ᵀ with E the normalized class embeddings [C, D] (kept FP)."""

    def __init__(self, class_embeddings: torch.Tensor, logit_scale: float):
        super().__init__()
        # Stored already transposed so the exported graph has one MatMul with a [D, C] initializer.
        self.register_buffer("weight_t", (float(logit_scale) * F.normalize(class_embeddings.float(), dim=-1)).t().contiguous())

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features @ self.weight_t

    @property
    def logit_scale(self) -> float:
        """Every column of weight_t is logit_scale times a unit vector."""
        return float(self.weight_t.norm(dim=0).mean())


class DeployModel(nn.Module):
    def __init__(self, visual: nn.Module, head: FoldedHead, adapter: nn.Module | None = None,
                 input_norm: InputNormalize | None = None, with_embedding: bool = False):
        super().__init__()
        self.input_norm = input_norm
        self.visual = visual
        self.adapter = adapter
        self.head = head
        self.with_embedding = with_embedding

    def forward(self, images: torch.Tensor):
        x = self.input_norm(images) if self.input_norm is not None else images
        f = self.visual(x)
        # The QAdapter takes the raw feature and normalizes its blend itself.
        emb = self.adapter(f) if self.adapter is not None else F.normalize(f, dim=-1)
        logits = self.head(emb)
        return (logits, emb) if self.with_embedding else logits


@dataclass
class FoldedModel:
    """Everything export needs: the network plus what goes into the manifest and reference.pt."""

    module: DeployModel
    classnames: list[str]
    preprocess: object  # TensorPreprocess
    model_info: dict
    profile: object  # QuantProfile
    reference_config: dict
    source_kind: str  # "run" | "model"
    recipe: dict | None = None
    accuracy: dict = field(default_factory=dict)
    data: str | None = None
    ptq_info: dict = field(default_factory=dict)


def resolve_profile(name: str | None):
    from ..quant.profiles import DEFAULT, get_profile

    profile = get_profile(name or DEFAULT)
    profile.require_exportable()
    return profile


def _reference_config(loaded, profile, adapter_cfg, classnames, embed_dim, uint8_input, with_embedding, keep_fp=()) -> dict:
    prep = loaded.preprocess
    return {
        "model_name": loaded.name,
        "model_cfg": loaded.model_cfg,
        "profile": profile.as_dict(),
        "keep_fp": [n for n in keep_fp if n.startswith("visual.")],  # image-tower layers left FP
        "adapter": adapter_cfg,
        "num_classes": len(classnames),
        "embed_dim": int(embed_dim),
        "uint8_input": bool(uint8_input),
        "mean": list(prep.mean),
        "std": list(prep.std),
        "with_embedding": bool(with_embedding),
    }


def _assemble(visual, class_embeddings, logit_scale, adapter, loaded, uint8_input, with_embedding) -> DeployModel:
    prep = loaded.preprocess
    norm = InputNormalize(prep.mean, prep.std) if uint8_input else None
    model = DeployModel(visual, FoldedHead(class_embeddings, logit_scale), adapter, norm, with_embedding)
    return model.to(class_embeddings.device).eval()  # InputNormalize starts on the CPU


def fold_model(spec: str, data: str, profile_name: str | None, calib_images: int = CALIB_IMAGES,
               uint8_input: bool = False, with_embedding: bool = False, seed: int = CALIB_SEED,
               calibration_dir="calibration", device: torch.device | str = "cpu", workers: int | None = None,
               keep_fp: list[str] | None = None) -> FoldedModel:
    """A bare MODEL: PTQ of the image tower on DATA's training split (the `keep_fp` layers left FP),
    zero-shot template head."""
    from ..data import load_dataset, parse_spec, templates_for
    from ..models import load_model
    from ..models.zeroshot import zero_shot_classifier
    from ..quant.ptq import build_ptq_model

    if not data:
        raise UserError("export of a bare MODEL needs --data SPEC (its classes make the zero-shot head)")
    parse_spec(data)
    profile = resolve_profile(profile_name)
    loaded = load_model(spec, device=str(device))
    train = load_dataset(data, "train")
    classnames = list(train.classnames)
    # Text side first and in FP: only the image tower is quantized and exported.
    class_emb = zero_shot_classifier(loaded.model, loaded.tokenizer, classnames, templates_for(train.name))
    logit_scale = float(loaded.model.logit_scale.exp().item())
    model, info = build_ptq_model(loaded, profile, False, train, n_calib=calib_images, seed=seed, calibration_dir=calibration_dir,
                                  workers=workers, keep_fp=keep_fp)
    module = _assemble(model.visual, class_emb, logit_scale, None, loaded, uint8_input, with_embedding)
    return FoldedModel(
        module=module,
        classnames=classnames,
        preprocess=loaded.preprocess,
        model_info=loaded.describe(),
        profile=profile,
        reference_config=_reference_config(loaded, profile, None, classnames, class_emb.shape[1], uint8_input, with_embedding,
                                           model.p4q_keep_fp),
        source_kind="model",
        data=data,
        ptq_info=_jsonable(info),
    )


def fold_run(run_dir, profile_name: str | None, uint8_input: bool = False, with_embedding: bool = False,
             device: torch.device | str = "cpu", keep_fp: list[str] | None = None) -> FoldedModel:
    """A trained P4Q run: its quantized image tower, QAdapter and learned-prompt class embeddings.
    Its recipe's keep_fp decides the FP layers; a different `keep_fp` is refused."""
    from ..p4q.run import load_run

    run = load_run(run_dir, device=device)
    profile = run.profile
    if profile is None:
        raise UserError(f"run {run_dir} is full precision (method {getattr(run.recipe, 'method', 'coop')}): nothing INT8 to export; "
                        "export its MODEL with --profile trt, or train with --method p4q")
    if keep_fp and sorted(keep_fp) != sorted(run.recipe.keep_fp):
        raise UserError(f"run {run_dir} keeps {run.recipe.keep_fp or 'no layers'} in FP (its recipe's keep_fp), not {list(keep_fp)}: "
                        "a run exports as it was trained; retrain with --set keep_fp=[...]")
    profile.require_exportable()  # a run trained with `paper` fake quantization is not deployable
    if profile_name and profile_name.strip().lower() != profile.name:
        asked = resolve_profile(profile_name)  # refuses `paper` with its own message
        raise UserError(
            f"run {run_dir} was quantized with profile '{profile.name}', not '{asked.name}': "
            f"export it with --profile {profile.name} (or train with the profile you want to ship)"
        )
    loaded = run.loaded
    with torch.no_grad():
        class_emb = run.class_embeddings().detach().float()
    logit_scale = float(run.model.logit_scale.exp().item())
    adapter = run.adapter
    adapter_cfg = None
    if adapter is not None:
        in_fc = adapter.fc.in_fc
        adapter_cfg = {
            "dim": int(in_fc.in_features),
            "reduction": int(in_fc.in_features // in_fc.out_features),
            "ratio": float(adapter.ratio),
            # the adapter's bits (its activations'); QAdapter caps the weights by the profile again
            "bits": int(in_fc.input_quantizer.bits),
        }
    module = _assemble(run.model.visual, class_emb, logit_scale, adapter, loaded, uint8_input, with_embedding)
    metrics = run.metrics or {}
    return FoldedModel(
        module=module,
        classnames=list(run.classnames),
        preprocess=loaded.preprocess,
        model_info=loaded.describe(),
        profile=profile,
        reference_config=_reference_config(loaded, profile, adapter_cfg, run.classnames, class_emb.shape[1], uint8_input, with_embedding,
                                           getattr(run.model, "p4q_keep_fp", [])),
        source_kind="run",
        recipe=_jsonable(run.recipe),
        accuracy=_jsonable(metrics.get("accuracy", {})),
        data=(_jsonable(run.recipe) or {}).get("data") if run.recipe is not None else None,
    )


def rebuild_reference(config: dict, state_dict: dict) -> DeployModel:
    """The PyTorch reference from a bundle: the same DeployModel, rebuilt from open_clip's model
    config (random init), quantized with the bundle's profile, then loaded with reference.pt."""
    import open_clip

    from ..quant import QuantProfile, quantize_clip

    cfg = dict(config["model_cfg"])
    custom_text = cfg.pop("custom_text", False)
    cls = open_clip.CustomTextCLIP if custom_text else open_clip.CLIP
    profile = QuantProfile(**config["profile"])
    clip = cls(**cfg)
    quantize_clip(clip, profile, quantize_text=False, keep_fp=config.get("keep_fp") or [])
    adapter = None
    if config.get("adapter"):
        from ..p4q.adapter import QAdapter

        a = config["adapter"]
        adapter = QAdapter(a["dim"], reduction=a["reduction"], ratio=a["ratio"], profile=profile, bits=a.get("bits") or 8)
    norm = InputNormalize(config["mean"], config["std"]) if config.get("uint8_input") else None
    head = FoldedHead(torch.zeros(config["num_classes"], config["embed_dim"]), 1.0)
    model = DeployModel(clip.visual, head, adapter, norm, config.get("with_embedding", False))
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    if missing or unexpected:
        raise UserError(f"reference.pt does not match its config (missing {missing[:3]}, unexpected {unexpected[:3]}): "
                        "a bundle of a convolutional tower exported before the tower families must be exported again")
    return model.eval()


def _jsonable(obj):
    """Recipes and metrics may be dataclasses / paths: make them JSON values."""
    import dataclasses
    import json
    from pathlib import Path

    if obj is None:
        return None
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    try:
        return json.loads(json.dumps(obj, default=lambda o: str(o) if isinstance(o, Path) else repr(o)))
    except (TypeError, ValueError):
        return repr(obj)
