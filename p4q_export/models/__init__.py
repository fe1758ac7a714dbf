"""open_clip loading (names, tags, local checkpoints, the project's JSON configs) and the test bed."""

from .loading import LoadedModel, load_model  # noqa: F401
