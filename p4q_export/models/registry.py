"""The project's own open_clip model configs (p4q_export/models/configs/*.json) and the file names of
an open_clip model directory: shared by loading and pretraining."""

from __future__ import annotations

from pathlib import Path

CONFIG_DIR = Path(__file__).parent / "configs"
CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_pytorch_model.bin"
_registered = False


def register_project_configs() -> None:
    """Make `p4q-testbed` etc. known to open_clip.create_model by name."""
    global _registered
    if not _registered:
        import open_clip

        open_clip.add_model_config(CONFIG_DIR)
        _registered = True
