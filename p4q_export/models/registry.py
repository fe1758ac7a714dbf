"""The project's own open_clip model configs (p4q_export/models/configs/*.json) and the file names of
an open_clip model directory: shared by loading and pretraining."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import UserError

CONFIG_DIR = Path(__file__).parent / "configs"
CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_pytorch_model.bin"
_registered: set[str] = set()  # folders already added to open_clip


MODEL_CONFIGS_ENV = "P4Q_MODEL_CONFIGS"  # more folders of open_clip JSON configs, os.pathsep-separated


def register_project_configs() -> None:
    """Make `p4q-testbed` etc. known to open_clip.create_model by name, and every config in the
    folders named by $P4Q_MODEL_CONFIGS (an architecture of your own, named like open_clip's)."""
    import open_clip

    folders = [str(CONFIG_DIR), *filter(None, os.environ.get(MODEL_CONFIGS_ENV, "").split(os.pathsep))]
    for folder in folders:
        if folder in _registered:
            continue
        if not Path(folder).is_dir():
            raise UserError(f"{MODEL_CONFIGS_ENV}: {folder} is not a folder of open_clip JSON model configs")
        open_clip.add_model_config(folder)
        _registered.add(folder)
