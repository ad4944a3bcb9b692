"""What the tool exposes and what it executes.

- Servers it starts listen on 127.0.0.1 unless told otherwise: ``ablate ui`` binds loopback by
  default, and the local Ray of ``ablate run`` starts without its dashboard (Ray's core services
  bind every interface; Ray 2.60 protects a local cluster with a generated token instead).
- Files users hand it are data: YAML through ``safe_load`` only, checkpoints through
  ``torch.load(weights_only=True)``; neither can run code.
- A spec can only name registered components; third-party ones arrive through the explicit
  ``ablate.components`` entry-point group, loaded once, on the first registry query.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.studykit import PlantedPickle, run, study_env, write_spec

PLUGIN_MODULE = '''
"""A head component shipped by another package, registered through an entry point."""

import torch
from torch import nn

CALLS = []


class ScaledHead(nn.Module):
    """Linear scorer with a temperature: one score in (0, 1) per snippet.

    Args:
        in_dim: Feature width (passed by the model).
        temperature: Divides the logits.
    """

    def __init__(self, in_dim: int, temperature: float = 2.0) -> None:
        super().__init__()
        self.fc = nn.Linear(in_dim, 1)
        self.temperature = temperature
        self.out_dim = 1

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc(h).squeeze(-1) / self.temperature)


def register(registry):
    CALLS.append(registry)
    registry.register("head", "scaled", ScaledHead)
'''


def install_plugin(site: Path, dist: str, entry_points: str, module: str | None = None,
                   source: str = PLUGIN_MODULE) -> Path:
    """Lays out an installed distribution as pip would: a module and its ``*.dist-info``."""
    site.mkdir(parents=True, exist_ok=True)
    if module is not None:
        (site / f"{module}.py").write_text(source)
    info = site / f"{dist}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    return site


def _one_error_line(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stdout + result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


# -- plugins --------------------------------------------------------------------------------

def test_plugin_component_is_usable_from_the_command_line(tmp_path: Path, cache: Path) -> None:
    site = install_plugin(tmp_path / "site", "ablate_scaled_head", """
        [ablate.components]
        scaled_head = ablate_scaled_head:register
    """, module="ablate_scaled_head")
    env = study_env(cache, PYTHONPATH=str(site))

    listing = run(["list"], tmp_path, env)
    assert listing.returncode == 0, listing.stderr
    assert "scaled: Linear scorer with a temperature" in listing.stdout
    assert "temperature: float = 2.0" in listing.stdout

    out = tmp_path / "out"
    trained = run(["train", "baseline", "--epochs", "1", "--set", "model.head.type=scaled",
                   "--set", "model.head.temperature=3.0", "--out", str(out)], tmp_path, env)
    assert trained.returncode == 0, trained.stderr
    assert "head:\n    type: scaled\n    temperature: 3.0" in (out / "config.yaml").read_text()


def test_without_the_plugin_the_name_is_unknown(tmp_path: Path, cache: Path) -> None:
    result = run(["train", "baseline", "--set", "model.head.type=scaled", "--out",
                  str(tmp_path / "out")], tmp_path, study_env(cache))
    assert _one_error_line(result) == (
        "error: model.head.type: unknown component 'scaled'; allowed: mlp")


def test_a_failing_plugin_is_named(tmp_path: Path, cache: Path) -> None:
    site = install_plugin(tmp_path / "site", "ablate_broken", """
        [ablate.components]
        broken = ablate_broken_missing:register
    """)
    result = run(["list"], tmp_path, study_env(cache, PYTHONPATH=str(site)))
    assert _one_error_line(result) == (
        "error: plugin 'broken' (ablate_broken_missing:register) of entry-point group "
        "'ablate.components' failed: ModuleNotFoundError: No module named "
        "'ablate_broken_missing'; fix or uninstall the package that provides it")


def test_plugins_load_once_and_only_when_the_registry_is_queried(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ablate.models.registry import Registry

    group = "ablate.components.test-once"  # this registry's own group, not the real one
    site = install_plugin(tmp_path, "ablate_once", f"""
        [{group}]
        once = ablate_once_plugin:register
    """, module="ablate_once_plugin")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, "ablate_once_plugin", raising=False)

    registry = Registry(plugin_group=group)
    registry.add_slot("head", group="model", default="mlp", description="Scorer.")
    assert "ablate_once_plugin" not in sys.modules  # declaring slots loads nothing

    assert registry.components("head") == ["scaled"]
    plugin = sys.modules["ablate_once_plugin"]
    assert plugin.CALLS == [registry]
    registry.get("head", "scaled")
    registry.options("head", "scaled")
    list(registry)
    assert plugin.CALLS == [registry]  # loaded once


def test_a_plugin_failing_to_register_fails_every_query(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ablate.errors import ConfigError
    from ablate.models.registry import Registry

    group = "ablate.components.test-clash"
    source = "def register(registry):\n    registry.register('head', 'mlp', object)\n"
    site = install_plugin(tmp_path, "ablate_clash", f"""
        [{group}]
        clash = ablate_clash_plugin:register
    """, module="ablate_clash_plugin", source=source)
    monkeypatch.syspath_prepend(str(site))
    registry = Registry(plugin_group=group)
    registry.add_slot("head", group="model", default="mlp", description="Scorer.")
    registry.register("head", "mlp", dict)
    for _ in range(2):  # not only the first: a spec never silently loses a component
        with pytest.raises(ConfigError, match=r"^plugin 'clash' \(ablate_clash_plugin:register\)"
                                              r" of entry-point group 'ablate\.components\."
                                              r"test-clash' failed: ValueError: component 'mlp'"
                                              r" is already registered in slot 'head'"):
            registry.get("head", "mlp")


def test_registry_without_a_plugin_group_loads_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata

    from ablate.models.registry import Registry

    def forbidden(**_: object) -> None:
        raise AssertionError("entry points were scanned")

    monkeypatch.setattr(importlib.metadata, "entry_points", forbidden)
    registry = Registry()
    registry.add_slot("head", group="model", default="mlp", description="Scorer.")
    assert registry.components("head") == []


# -- files are data -------------------------------------------------------------------------

def test_python_tags_in_a_spec_are_refused(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    spec = tmp_path / "evil.yaml"
    spec.write_text(f"name: evil\ndataset: synthetic\n"
                    f"base: !!python/object/apply:os.mkdir [{str(marker)!r}]\n")
    result = run(["run", str(spec), "--dry-run"], tmp_path, study_env(tmp_path))
    assert _one_error_line(result) == (
        f"error: {spec}: line 3: invalid YAML: could not determine a constructor for the tag "
        f"'tag:yaml.org,2002:python/object/apply:os.mkdir'")
    assert not marker.exists()


def test_python_tags_in_a_trial_config_and_in_set_are_refused(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    config = tmp_path / "trial.yaml"
    config.write_text(f"model: !!python/object/apply:os.mkdir [{str(marker)!r}]\n")
    out = str(tmp_path / "out")
    result = run(["train", str(config), "--out", out], tmp_path, study_env(tmp_path))
    assert "could not determine a constructor for the tag" in _one_error_line(result)

    option = f"train.lr=!!python/object/apply:os.mkdir [{str(marker)!r}]"
    result = run(["train", "baseline", "--set", option, "--out", out], tmp_path,
                 study_env(tmp_path))
    assert _one_error_line(result) == (f"error: --set {option}: value is not valid YAML "
                                       f"(ConstructorError)")
    assert not marker.exists()


def test_a_checkpoint_carrying_code_is_refused_unexecuted(tmp_path: Path) -> None:
    import torch

    from ablate.errors import AblateError
    from ablate.train.checkpoint import LATEST, load_checkpoint

    marker = tmp_path / "executed"
    torch.save({"epoch": 1, "model": {}, "extra": PlantedPickle(marker)}, tmp_path / LATEST)
    with pytest.raises(AblateError, match=r"checkpoint\.pt \(corrupt, or holds more than "
                                          r"tensors and plain data: UnpicklingError\)"):
        load_checkpoint(tmp_path)
    assert not marker.exists()


# -- servers --------------------------------------------------------------------------------

def test_ui_binds_loopback_by_default() -> None:
    from ablate.cli.report import ui

    host = next(p for p in ui.params if p.name == "host")
    assert host.default == "127.0.0.1"


def test_local_ray_starts_without_a_dashboard(tmp_path: Path, cache: Path, tracking_uri: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    from ablate.engine.runner import run_study
    from ablate.study.plan import build_plan
    from ablate.study.spec import load_spec

    class Started(Exception):
        pass

    calls = []

    def fake_init(**kwargs: object) -> None:
        calls.append(kwargs)
        raise Started

    monkeypatch.setenv("ABLATE_CACHE", str(cache))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", fake_init)
    plan = build_plan(load_spec(write_spec(tmp_path, "ports")))
    with pytest.raises(Started):
        run_study(plan, str(tmp_path / "runs"), tracking_uri, None, quiet=True)
    assert calls and calls[0]["address"] == "local"
    assert calls[0]["include_dashboard"] is False
