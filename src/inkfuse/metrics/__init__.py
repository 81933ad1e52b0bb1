"""Metrics: FID / KID / precision-recall on Inception features, the domain classifiers'
accuracy and FD_cls for MNIST and Fashion-MNIST, and the shapes checker.

    from inkfuse.metrics import evaluate
    evaluate("runs/mnist", ["fid", "accuracy", "fd_cls"], n=1000)
"""

from inkfuse.lazy import lazy_names

_NAMES = {
    "Classifier": "inkfuse.metrics.classifier",
    "load_classifier": "inkfuse.metrics.classifier",
    "class_accuracy": "inkfuse.metrics.domain",
    "fd_cls": "inkfuse.metrics.domain",
    "METRICS": "inkfuse.metrics.evaluation",
    "evaluate": "inkfuse.metrics.evaluation",
    "evaluate_images": "inkfuse.metrics.evaluation",
    "evaluate_npz": "inkfuse.metrics.evaluation",
    "parse_metrics": "inkfuse.metrics.evaluation",
    "ReferenceStats": "inkfuse.metrics.fid",
    "feature_stats": "inkfuse.metrics.fid",
    "fid_from_features": "inkfuse.metrics.fid",
    "fid_from_npz": "inkfuse.metrics.fid",
    "frechet_distance": "inkfuse.metrics.fid",
    "inception_features": "inkfuse.metrics.fid",
    "kid": "inkfuse.metrics.fid",
    "load_inception": "inkfuse.metrics.fid",
    "precision_recall": "inkfuse.metrics.fid",
    "reference_stats": "inkfuse.metrics.fid",
    "DetectedShape": "inkfuse.metrics.shapes_check",
    "attribute_accuracy": "inkfuse.metrics.shapes_check",
    "check": "inkfuse.metrics.shapes_check",
    "detect": "inkfuse.metrics.shapes_check",
    "kind_accuracy": "inkfuse.metrics.shapes_check",
}
__all__ = sorted(_NAMES)
__getattr__ = lazy_names(__name__, _NAMES)
