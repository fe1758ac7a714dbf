"""Caption / zero-shot prompt templates per dataset. ImageNet-style data uses open_clip's own."""

from __future__ import annotations

from ..errors import UserError

FASHION_TEMPLATES = (
    "a photo of a {}.",
    "a black and white photo of a {}.",
    "a low resolution photo of a {}.",
    "a grayscale photo of the {}.",
    "a picture of a {}.",
    "an image of a {}.",
    "a photo of the {}.",
    "a product photo of a {}.",
    "a close-up photo of a {}.",
    "a cropped photo of a {}.",
)
DIGIT_TEMPLATES = (
    'a photo of the number: "{}".',
    "a photo of the digit {}.",
    "a handwritten {}.",
    "a black and white photo of the number {}.",
    "a low resolution photo of the digit {}.",
    "an image of the number {}.",
    "a picture of a handwritten {}.",
    "a grayscale image of the digit {}.",
    "a scan of the handwritten number {}.",
    "the digit {}, written by hand.",
)


PROMPT_STYLES = ("", "glyphs")  # "" = the dataset's own; glyphs = for the glyph-pretrained test bed


def with_prompts(ds, style: str):
    """`ds` (an ImageDataset) with the class names and templates of a prompt style: "" leaves it
    as it is; "glyphs" asks in the words the glyph corpus was captioned with (digit seven, running
    shoe...). The templates travel in ds.meta["templates"] (see dataset_templates)."""
    if style not in PROMPT_STYLES:
        raise UserError(f"prompts must be one of: '' (the dataset's own), glyphs; got '{style}'")
    if not style:
        return ds
    from .glyphs_captions import GLYPH_PROMPTS

    if ds.name not in GLYPH_PROMPTS:
        raise UserError(f"prompts: glyphs has class names for {', '.join(GLYPH_PROMPTS)} only, not '{ds.name}'")
    names, templates = GLYPH_PROMPTS[ds.name]
    out = ds.subset(range(len(ds)))
    out.classnames = list(names)
    out.meta["templates"] = tuple(templates)  # no full stop: the corpus's captions have none
    return out


def dataset_templates(ds) -> tuple[str, ...]:
    """The templates a dataset is prompted with: a prompt style's (with_prompts), else its name's."""
    return tuple(ds.meta.get("templates") or templates_for(ds.name))


def templates_for(dataset_name: str) -> tuple[str, ...]:
    """Templates with one `{}` for the class name."""
    if dataset_name in ("mnist", "digits"):
        return DIGIT_TEMPLATES
    if dataset_name == "fashion-mnist":
        return FASHION_TEMPLATES
    # imagefolder / coop / ImageNet-like: open_clip's OpenAI ImageNet templates
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    return tuple(t("{}") for t in OPENAI_IMAGENET_TEMPLATES)
