"""Datasets behind `--data SPEC`, few-shot and calibration samplers, preprocessing."""

from .datasets import ImageDataset, DatasetSpec, parse_spec, load_dataset  # noqa: F401
from .samplers import few_shot_indices, calibration_indices, write_calibration_list  # noqa: F401
from .preprocess import TensorPreprocess, preprocess_dataset  # noqa: F401
from .templates import templates_for  # noqa: F401
