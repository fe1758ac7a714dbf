"""Datasets behind `--data SPEC`, few-shot and calibration samplers, preprocessing."""

from .datasets import DatasetSpec, ImageDataset, load_dataset, parse_spec  # noqa: F401
from .loader import image_batches, preprocess_dataset  # noqa: F401
from .preprocess import TensorPreprocess  # noqa: F401
from .samplers import calibration_indices, few_shot_indices, write_calibration_list  # noqa: F401
from .templates import dataset_templates, templates_for, with_prompts  # noqa: F401
