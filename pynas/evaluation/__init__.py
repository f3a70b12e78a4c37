"""Scoring paths of a single-path supernet (batched, with per-path batch-norm recalibration)."""
from .paths import (BN_POLICIES, MEMORY_FORMATS, STRATEGIES, PathEvaluation, auto_memory_format, evaluate_paths,
                    evaluate_paths_sequential, path_accuracy_and_loss, path_losses, path_losses_own_batches)

__all__ = ["BN_POLICIES", "MEMORY_FORMATS", "STRATEGIES", "PathEvaluation", "auto_memory_format", "evaluate_paths",
           "evaluate_paths_sequential", "path_accuracy_and_loss", "path_losses", "path_losses_own_batches"]
