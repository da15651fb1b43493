"""Metrics, as ``keras.metrics`` (partial sums computed in the graph, aggregated per epoch)."""
from .train.metrics import (AUC, BinaryAccuracy, CategoricalAccuracy, MeanAbsoluteError, MeanSquaredError,
                            Metric, Precision, Recall, SparseCategoricalAccuracy, SparseTopKCategoricalAccuracy,
                            TopKCategoricalAccuracy)
from .train.metrics import get_metric as get

__all__ = ["Metric", "BinaryAccuracy", "CategoricalAccuracy", "SparseCategoricalAccuracy",
           "TopKCategoricalAccuracy", "SparseTopKCategoricalAccuracy", "Precision", "Recall", "AUC",
           "MeanSquaredError", "MeanAbsoluteError", "get"]
