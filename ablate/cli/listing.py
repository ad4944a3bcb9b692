"""``ablate list``: every slot, its components and their options, then the presets."""

from __future__ import annotations

import textwrap

import click

from ablate.errors import ConfigError, closest, unknown_message

_WIDTH = 100
_HEADER = (
    "A model or loss spec maps each slot to {type: COMPONENT, OPTION: VALUE, ...}; "
    "type: none switches an optional slot off. Options are shown as NAME: TYPE = DEFAULT."
)


def _wrap(text: str, indent: int) -> list[str]:
    pad = " " * indent
    return textwrap.wrap(text, _WIDTH, initial_indent=pad, subsequent_indent=pad) or [pad.rstrip()]


def render(slot: str | None = None) -> str:
    """The text ``ablate list`` prints, optionally for one slot only.

    Args:
        slot: A slot name (``como``) to list alone; None lists everything and the presets.

    Raises:
        ConfigError: ``slot`` is not a slot.
    """
    from ablate.models import LOSS_OPTIONS, PRESET_SUMMARIES, REGISTRY
    from ablate.models.listing import format_value

    slots = REGISTRY.slots()
    if slot is not None and slot not in slots:
        tail = unknown_message("unknown slot", sorted(slots), closest(slot, slots))
        raise ConfigError(f"{slot}: {tail}")

    lines = _wrap(_HEADER, 0) + [""]
    for name in slots if slot is None else [slot]:
        info = REGISTRY.slot(name)
        kind = "optional" if info.optional else "required"
        head = f"{info.group}.{name} ({kind}, default {info.default}): {info.description}"
        lines.extend(_wrap(head, 0))
        for component in REGISTRY.components(name):
            lines.extend(_wrap(f"{component}: {REGISTRY.describe(name, component)}", 2))
            for opt in REGISTRY.options(name, component):
                lines.append(f"    {opt.name}: {opt.type} = {format_value(opt.default)}")
                lines.extend(_wrap(opt.description, 8))
        lines.append("")

    if slot is None:
        lines.append("loss options (global weights, not components):")
        for key, (default, text) in LOSS_OPTIONS.items():
            lines.append(f"    {key}: float = {format_value(default)}")
            lines.extend(_wrap(text, 8))
        lines.append("")
        lines.append("presets (a model and a loss spec each):")
        width = max(len(p) for p in PRESET_SUMMARIES)
        for preset, text in PRESET_SUMMARIES.items():
            lines.append(f"  {preset.ljust(width)}  {text}")
    return "\n".join(lines).rstrip() + "\n"


@click.command("list")
@click.argument("slot", required=False)
def list_command(slot: str | None) -> None:
    """List the model and loss components, their options, and the presets.

    With SLOT (e.g. como), list only that slot's components.
    """
    click.echo(render(slot), nl=False)
