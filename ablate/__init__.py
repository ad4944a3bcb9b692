"""ablate: ablation studies and hyper-parameter searches for video anomaly detection.

Importing the package is cheap: Ray, MLflow and torch are imported lazily by the
modules that need them.
"""

__version__ = "0.1.0"
