"""A trial's identity: (study, variant, seed, resolved config), derived from the plan alone.

Ray's trial ids are Ray's: they change whenever Ray's state is lost or a study is run from
another storage. MLflow runs and checkpoints are found by the identity instead, so a trial is
recorded exactly once whatever Ray remembers. Ablation trials carry their plan key
(``variant/seedN``); a search trial is named after its resolved config (``cfg-1a2b3c4d/seed0``),
so the same sampled configuration and seed is the same trial. :meth:`ablate.study.plan.Plan.trial`
gives the identity of a Tune config.
"""

from __future__ import annotations

from dataclasses import dataclass

TRIAL_INDEX = "__trial_index__"  # set by Ray's Repeater: which seed of a searched config
SEARCH_PREFIX = "cfg-"


@dataclass(frozen=True)
class TrialIdentity:
    """What a trial is, whatever engine runs it."""

    key: str  # "variant/seedN": the MLflow run's ablate.trial_key
    variant: str
    seed: int
    config_hash: str  # of the resolved config without the seed
