"""Metrics: FID / KID / precision-recall on Inception features, the domain classifiers'
accuracy and FD_cls for MNIST and Fashion-MNIST, and the shapes checker.

    from inkfuse.metrics import evaluate
    evaluate("runs/mnist", ["fid", "accuracy", "fd_cls"], n=1000)
"""

from inkfuse.metrics.classifier import Classifier, load_classifier
from inkfuse.metrics.cli import add_eval_parser
from inkfuse.metrics.domain import class_accuracy, fd_cls
from inkfuse.metrics.evaluation import (
    METRICS,
    evaluate,
    evaluate_images,
    evaluate_npz,
    parse_metrics,
)
from inkfuse.metrics.fid import (
    ReferenceStats,
    feature_stats,
    fid_from_features,
    fid_from_npz,
    frechet_distance,
    inception_features,
    kid,
    load_inception,
    precision_recall,
    reference_stats,
)
from inkfuse.metrics.shapes_check import (
    DetectedShape,
    attribute_accuracy,
    check,
    detect,
    kind_accuracy,
)

__all__ = [
    "METRICS", "Classifier", "DetectedShape", "ReferenceStats", "add_eval_parser",
    "attribute_accuracy", "check", "class_accuracy", "detect", "evaluate", "evaluate_images",
    "evaluate_npz", "fd_cls", "feature_stats", "fid_from_features", "fid_from_npz",
    "frechet_distance", "inception_features", "kid", "kind_accuracy", "load_classifier",
    "load_inception", "parse_metrics", "precision_recall", "reference_stats",
]
