"""Global options where people type them: before the command or after it.

The root callback's options (``--config/-c``, ``--workspace/-w``, ``--env/-e``,
``--json``, ``--debug``, ``--no-wait``) are the one definition. When the
command tree is built, :class:`GlobalOptionsGroup` (the root group's class)
copies each of them onto every command and group below it, so
``kbrelease package import x.tar --env prod`` means
``kbrelease --env prod package import x.tar``. A copy writes into the same
:class:`~kbrelease.cli._common.Options` the root callback made, only when it was
typed, and it is parsed after the root's, so **the option typed after the
command wins** over the one typed before it; both win over environment
variables and the config file. A name a command already uses for something
else stays that command's own (the copy takes the remaining spellings).

``--json`` before the command (or after a group, ``kbrelease store --json
status``) turns on the ``--json`` of the command that runs, through click's
``default_map``; commands whose output is a file of another format (``argo
github``, ``argo diagram``, ``argo shards``, ``serve nginx-conf``) have none.
"""

from __future__ import annotations

import copy
from collections.abc import MutableMapping
from typing import Any

from typer.core import TyperGroup

GLOBAL_PANEL = "Global options (also accepted before the command)"
JSON_PARAM = "json_output"
"""The parameter name of every command's ``--json`` flag (``JsonOpt``) and of the root's."""


def _typed(ctx: Any, param: Any) -> bool:
    source = ctx.get_parameter_source(param.name)
    return getattr(source, "name", "") == "COMMANDLINE"


def json_defaults(command: Any) -> dict[str, Any]:
    """A click ``default_map`` that turns on ``--json`` in every command below ``command`` that has one."""
    out: dict[str, Any] = {}
    for name, sub in getattr(command, "commands", {}).items():
        entry: dict[str, Any] = json_defaults(sub)
        if any(p.name == JSON_PARAM for p in sub.params):
            entry[JSON_PARAM] = True
        if entry:
            out[name] = entry
    return out


def _has_json(command: Any) -> bool:
    return any(p.name == JSON_PARAM for p in command.params) or any(_has_json(c) for c in getattr(command, "commands", {}).values())


def _setter(name: str) -> Any:
    def callback(ctx: Any, param: Any, value: Any) -> Any:
        if not _typed(ctx, param) or ctx.obj is None:
            return value
        setattr(ctx.obj, name, value)
        if name == JSON_PARAM and value:
            use_json_below(ctx)
        return value

    return callback


def use_json_below(ctx: Any) -> None:
    """Turn on ``--json`` for the command that ``ctx``'s group (or the root) runs next."""
    defaults: MutableMapping[str, Any] = dict(ctx.default_map or {})
    for name, entry in json_defaults(ctx.command).items():
        defaults[name] = {**entry, **(defaults.get(name) or {})}
    ctx.default_map = defaults


def _copy_onto(command: Any, option: Any) -> None:
    taken = {o for p in command.params for o in [*getattr(p, "opts", []), *getattr(p, "secondary_opts", [])]}
    opts = [o for o in option.opts if o not in taken]
    if not opts or any(p.name == option.name for p in command.params):
        return  # the command has its own option of that name (its own --json)
    if option.name == JSON_PARAM and not _has_json(command):
        return  # nothing below prints JSON
    clone = copy.copy(option)
    clone.opts = opts
    clone.secondary_opts = [o for o in option.secondary_opts if o not in taken]
    clone.name = f"global_{option.name}"
    clone.expose_value = False
    clone.callback = _setter(option.name)
    clone.rich_help_panel = GLOBAL_PANEL
    clone.is_global = True  # scripts/gen_docs.py lists them once, not under every command
    command.params.append(clone)


def _spread(command: Any, options: list[Any]) -> None:
    for sub in getattr(command, "commands", {}).values():
        for option in options:
            _copy_onto(sub, option)
        _spread(sub, options)


class GlobalOptionsGroup(TyperGroup):
    """The root group: copies its own options onto every command below it (see the module docstring)."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        options = [p for p in self.params if getattr(p, "param_type_name", "") == "option" and p.expose_value and not p.is_eager]
        _spread(self, options)
