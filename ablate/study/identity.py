"""A trial's identity: (study, variant, seed, resolved config), derived from the plan alone.

Ray's trial ids are Ray's: they change whenever Ray's state is lost or a study is run from
another storage. MLflow runs and checkpoints are found by the identity instead, so a trial is
recorded exactly once whatever Ray remembers. Ablation trials carry their plan key
(``variant/seedN``); a search trial is named after its resolved config (``cfg-1a2b3c4d/seed0``),
so the same sampled configuration and seed is the same trial.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ablate.config import apply_overrides

TRIAL_INDEX = "__trial_index__"  # set by Ray's Repeater: which seed of a searched config
SEARCH_PREFIX = "cfg-"


@dataclass(frozen=True)
class TrialIdentity:
    """What a trial is, whatever engine runs it."""

    key: str  # "variant/seedN": the MLflow run's ablate.trial_key
    variant: str
    seed: int
    config_hash: str  # of the resolved config without the seed


def trial_raw_config(config: dict[str, Any], plan: dict[str, Any]) -> tuple[dict, int]:
    """The raw trial mapping and seed of a Tune ``config``.

    Ablation trials carry ``trial_key`` (looked up in the plan); search trials carry sampled
    values under dotted keys, plus the Repeater's index choosing the seed.
    """
    if "trial_key" in config:
        entry = plan["trials"][config["trial_key"]]
        return entry["raw"], entry["seed"]
    sampled = {k: v for k, v in config.items() if k != TRIAL_INDEX}
    seed = plan["seeds"][int(config.get(TRIAL_INDEX, 0)) % len(plan["seeds"])]
    return {**apply_overrides(plan["base"], sampled), "seed": seed}, seed


def identify(config: dict[str, Any], plan: dict[str, Any]) -> TrialIdentity:
    """The identity of the trial a Tune ``config`` describes."""
    if "trial_key" in config:
        entry = plan["trials"][config["trial_key"]]
        return TrialIdentity(config["trial_key"], entry["variant"], entry["seed"], entry["hash"])
    from ablate.config import resolve_trial_config
    from ablate.study.plan import config_hash

    raw, seed = trial_raw_config(config, plan)
    digest = config_hash(resolve_trial_config(raw))
    variant = f"{SEARCH_PREFIX}{digest[:8]}"
    return TrialIdentity(f"{variant}/seed{seed}", variant, seed, digest)
