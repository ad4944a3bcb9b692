"""The study model: a YAML spec of variants x seeds (or a search), resolved into a plan, with its
identity, scheduler and records. Running it is :mod:`ablate.engine`; tracking it
:mod:`ablate.tracking`."""
