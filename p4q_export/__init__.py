"""p4q-export: P4Q quantization of CLIP and its deployment as INT8 artifacts."""

__version__ = "0.1.0"
