"""Metrics: FID / KID / precision-recall on Inception features, the domain classifiers'
accuracy and FD_cls for MNIST and Fashion-MNIST, the shapes checker, the likelihood in bits per
dimension (variational bound and probability-flow ODE) and the copy check.

    from inkfuse.metrics import evaluate
    evaluate("runs/mnist", ["fid", "accuracy", "fd_cls", "bpd", "nn"], n=1000)
"""

from inkfuse.lazy import lazy_names

_NAMES = {
    "Classifier": "inkfuse.metrics.classifier",
    "load_classifier": "inkfuse.metrics.classifier",
    "CopyReport": "inkfuse.metrics.copying",
    "copy_check": "inkfuse.metrics.copying",
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
    "ode_nll": "inkfuse.metrics.likelihood",
    "run_bpd": "inkfuse.metrics.likelihood",
    "vlb_nll": "inkfuse.metrics.likelihood",
    "DetectedShape": "inkfuse.metrics.shapes_check",
    "attribute_accuracy": "inkfuse.metrics.shapes_check",
    "check": "inkfuse.metrics.shapes_check",
    "detect": "inkfuse.metrics.shapes_check",
    "kind_accuracy": "inkfuse.metrics.shapes_check",
}
__all__ = sorted(_NAMES)
__getattr__ = lazy_names(__name__, _NAMES)
