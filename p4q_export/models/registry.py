"""The project's own open_clip model configs (p4q_export/models/configs/*.json) and the file names of
an open_clip model directory: shared by loading and pretraining."""

from __future__ import annotations

import json
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
        for path in sorted(Path(folder).glob("*.json")):  # open_clip would raise mid-scan, and on every later scan
            try:
                cfg = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                raise UserError(f"{MODEL_CONFIGS_ENV}: {path} is not a readable JSON model config ({exc})") from None
            if not isinstance(cfg, dict) or not {"embed_dim", "vision_cfg", "text_cfg"} <= set(cfg):
                raise UserError(f"{MODEL_CONFIGS_ENV}: {path} lacks embed_dim, vision_cfg or text_cfg (open_clip's model config keys)")
        open_clip.add_model_config(folder)
        _registered.add(folder)
