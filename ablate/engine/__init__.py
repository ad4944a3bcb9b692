"""Running a study on Ray Tune: the driver (runner, preflight, Tune setup, reconciliation), the
Tune trainable and callback, and what Ray left behind (Tune state, adoption, cluster)."""
