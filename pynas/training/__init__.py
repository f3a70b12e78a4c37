"""Training loops: supernet search (``SearchRunner``) and stand-alone training (``train_network``)."""
from .checkpoint import load_checkpoint, save_checkpoint
from .search import SearchRunner

__all__ = ["SearchRunner", "save_checkpoint", "load_checkpoint"]
