"""What Ray Tune left in a study's ``tune/`` directory, read as plain JSON (never unpickled).

Two questions: can Tune restore the experiment (a whole ``tuner.pkl`` and a whole newest
search-algorithm state, each checked opcode by opcode without running any, and a readable newest
``experiment_state-*.json``), and which checkpoints
belong to a trial. Checkpoints are matched
by the trial's plan identity (each trial directory's ``params.json`` holds its Tune config), not
by Ray's trial id, so a trial continues from its checkpoint even when Tune's experiment state
was lost and Ray gave it a new id.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ablate.bounded import load_json

if TYPE_CHECKING:
    from ablate.study.plan import Plan

TUNER_FILE = "tuner.pkl"
STATE_GLOB = "experiment_state-*.json"
PARAMS_FILE = "params.json"
# The search algorithm's state, a pickle whatever its suffix: Tune restores the newest by name of
# each (the grid's variant generator, a search generator, a searcher).
SEARCH_STATE_PREFIXES = ("basic-variant-state-", "search_gen_state-", "searcher-state-")


class TuneState(enum.Enum):
    NONE = "none"  # no Tune experiment: a fresh start
    RESTORABLE = "restorable"
    CORRUPT = "corrupt"  # Tune's files are there but tuner.pkl, the newest snapshot or the
    # newest search-algorithm state is not whole
    FINISHED = "finished"  # not read: the study finished, and its finished runs are adopted


def tune_state(tune_path: str) -> TuneState:
    """Whether Tune can restore the experiment at ``tune_path`` (a path or a URI)."""
    import pyarrow.fs

    fs, path = pyarrow.fs.FileSystem.from_uri(tune_path if "://" in tune_path
                                              else str(Path(tune_path).resolve()))
    if fs.get_file_info(f"{path}/{TUNER_FILE}").type == pyarrow.fs.FileType.NotFound:
        return TuneState.NONE
    if not _whole_pickle(fs, f"{path}/{TUNER_FILE}"):
        return TuneState.CORRUPT
    listing = fs.get_file_info(pyarrow.fs.FileSelector(path))
    states = sorted(i.path for i in listing
                    if Path(i.path).name.startswith("experiment_state-")
                    and i.path.endswith(".json"))
    if not states:
        return TuneState.CORRUPT
    try:  # Tune restores from the newest by name; a truncated one fails the restore
        with fs.open_input_stream(states[-1]) as f:
            state = load_json(f.read().decode())
    except (OSError, ValueError):
        return TuneState.CORRUPT
    if not isinstance(state, dict) or not isinstance(state.get("trial_data"), list):
        return TuneState.CORRUPT
    for prefix in SEARCH_STATE_PREFIXES:  # a truncated one fails the restore inside Tune
        saved = sorted(i.path for i in listing if Path(i.path).name.startswith(prefix))
        if saved and not _whole_pickle(fs, saved[-1]):
            return TuneState.CORRUPT
    return TuneState.RESTORABLE


def _whole_pickle(fs: Any, path: str) -> bool:
    """Whether the file is a complete pickle (a truncated one ends before its STOP opcode),
    read with :mod:`pickletools`, which decodes opcodes and runs none of them."""
    import pickletools

    try:
        with fs.open_input_stream(path) as f:
            data = f.read()
        for _ in pickletools.genops(data):
            pass
    except Exception:  # noqa: BLE001 (any malformed opcode stream, or an unreadable file)
        return False
    return True


def unknown_groups(tune_path: str, plan: Plan) -> list[str]:
    """The fused groups that Tune's trials under ``tune_path`` train (each trial directory's
    ``params.json``) and the plan does not have: a study record whose groups were renamed
    (local storage only)."""
    from ablate.study.plan import GROUP_KEY

    if "://" in tune_path or not plan.fused:
        return []
    found = set()
    for params in Path(tune_path).glob(f"*/{PARAMS_FILE}"):
        try:
            config = load_json(params.read_text())
        except (OSError, ValueError):
            continue  # being written, or not Tune's: a restore fails on it by itself
        if isinstance(config, dict) and isinstance(config.get(GROUP_KEY), str):
            found.add(config[GROUP_KEY])
    return sorted(found - set(plan.groups))


def member_dirs_of(tune_path: str, key: str, plan: Plan) -> list[tuple[Path, int, int]]:
    """``(trial directory, member index, members)`` of every Tune trial that trained the trial
    ``key``, alone or fused (local storage only)."""
    from ablate.errors import ConfigError

    if "://" in tune_path:
        return []
    found = []
    for params in sorted(Path(tune_path).glob(f"*/{PARAMS_FILE}")):
        try:
            config = load_json(params.read_text())
            members = [m.key for m in plan.members(config)] if isinstance(config, dict) else []
        except (OSError, ValueError, KeyError, TypeError, ConfigError):
            continue  # unreadable, or a trial of another plan
        if key in members:
            found.append((params.parent, members.index(key), len(members)))
    return found


def checkpoints_of(tune_path: str, key: str, plan: Plan) -> list[tuple[int, Path]]:
    """``(epochs, directory)`` of every readable checkpoint of the trial ``key``, most advanced
    first (epochs: the length of the checkpoint's metric history; directory: where the trial's
    own files are, inside a fused trial's checkpoint for a member)."""
    from ablate.study.plan import member_dir
    from ablate.train.outputs import HISTORY

    ranked = []
    for trial_dir, index, count in member_dirs_of(tune_path, key, plan):
        for checkpoint in trial_dir.glob("checkpoint_*"):
            directory = member_dir(checkpoint, index, count)
            try:
                ranked.append((len(load_json((directory / HISTORY).read_text())), directory))
            except (OSError, ValueError, TypeError):
                continue  # a checkpoint being written when its writer died
    return sorted(ranked, key=lambda item: item[0], reverse=True)
