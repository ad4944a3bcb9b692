"""Statistics of seed results, on scipy and statsmodels: one comparison paired on seeds
(:mod:`~ablate.stats.paired`) and the decisions of a table of them over a study's looks
(:mod:`~ablate.stats.decide`)."""
