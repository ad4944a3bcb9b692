"""Studies: a YAML spec of variants × seeds (or a search), run on Ray Tune, tracked in MLflow."""
