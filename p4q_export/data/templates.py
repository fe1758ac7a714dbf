"""Caption / zero-shot prompt templates per dataset. ImageNet-style data uses open_clip's own."""

from __future__ import annotations

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


def templates_for(dataset_name: str) -> tuple[str, ...]:
    """Templates with one `{}` for the class name."""
    if dataset_name in ("mnist", "digits"):
        return DIGIT_TEMPLATES
    if dataset_name == "fashion-mnist":
        return FASHION_TEMPLATES
    # imagefolder / coop / ImageNet-like: open_clip's OpenAI ImageNet templates
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    return tuple(t("{}") for t in OPENAI_IMAGENET_TEMPLATES)
