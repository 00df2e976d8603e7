"""A command's options from a TOML file (``nova record --config recorder.toml``), the command line over it.

Why through the command's ``default_map`` (click's, as typer carries it): a value from the file becomes the
option's default and goes through the very parser the flag uses (durations, symbols, depth speeds, ranges), so
the file cannot accept what the flag refuses, and a flag given on the command line wins without any merging
code. What this module adds is the checking that names the file, the line and the key, before anything starts:
an unknown key (with the nearest known one), a value of the wrong TOML type, or one the flag's parser refuses.

Keys are the long flag names without the dashes (``spot-depth`` or ``spot_depth``); ``symbols`` is a list of
symbols or ``"all"``; switches take ``true``/``false``; durations and speeds are written as on the command line
(``flush = "1s"``), or as a number of seconds.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from nova.core.errors import NovaError

ALL = "all"  # ``symbols = "all"``: the --all switch


class ConfigError(NovaError, ValueError):
    """A configuration file that cannot be used: the sentence names the file, and the line and key when one is
    to blame."""


def _line_of(text: str, key: str) -> int | None:
    pattern = re.compile(rf"^\s*(\[\s*)?[\"']?{re.escape(key)}[\"']?\s*[=\]]")  # key = ... or [key]
    for number, line in enumerate(text.splitlines(), 1):
        if pattern.match(line):
            return number
    return None


def _flag_name(param: Any) -> str:
    """How the file spells a parameter: its long flag without dashes (``--all`` -> ``all``), or its name."""
    longs = [o for o in getattr(param, "opts", []) if o.startswith("--")]
    return longs[0][2:] if longs else (param.name or "")


def _as_text(value: Any) -> Any:
    """A TOML value as the command line would have given it: words, lists joined by commas."""
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def load(ctx: typer.Context, path: Path, reason: Callable[[typer.BadParameter], str],
         skip: tuple[str, ...] = ("config",)) -> dict[str, Any]:
    """The file's values as ``ctx``'s ``default_map`` (by parameter name), each checked by its flag's parser.

    ``reason``: the words for a value a parser refused (the CLI's, so the file and the flag read alike);
    ``skip``: parameters the file may not set (the ``--config`` option itself)."""
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{where} does not exist; give the path of a TOML file (see 'nova record -h')") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {where} ({getattr(exc, 'strerror', None) or exc}); check the path and "
                          "its permissions") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where} is not valid TOML: {exc}; fix that line") from None
    params = {_flag_name(p): p for p in ctx.command.params if p.name not in skip}
    params |= {name.replace("-", "_"): p for name, p in params.items()}
    defaults: dict[str, Any] = {}
    for key, value in data.items():
        line = _line_of(text, key)
        at = f"{where} line {line}" if line is not None else where
        param = params.get(key)
        if param is None:
            near = difflib.get_close_matches(key, [k for k in params if "_" not in k or k.replace("_", "-") not in
                                                   params], n=1)
            hint = f"; did you mean '{near[0]}'?" if near else f"; the keys are the long options of 'nova " \
                f"{ctx.info_name} -h' without the dashes"
            raise ConfigError(f"{at}: unknown key '{key}'{hint}")
        assert param.name is not None
        if isinstance(value, dict):
            raise ConfigError(f"{at}: '{key}' is a table; write it as {key} = VALUE")
        if getattr(param, "is_flag", False):
            if not isinstance(value, bool):
                raise ConfigError(f"{at}: '{key}' is a switch; write true or false, not {value!r}")
            defaults[param.name] = value
            continue
        if param.nargs == -1:  # the positional symbols
            if value == ALL and "every" in {p.name for p in ctx.command.params}:
                defaults["every"] = True
                continue
            words = value if isinstance(value, list) else str(value).split(",")
            converted: Any = tuple(str(w).strip() for w in words if str(w).strip())
        else:
            converted = _as_text(value)
        try:
            param.process_value(ctx, converted)
        except typer.BadParameter as exc:
            raise ConfigError(f"{at}: '{key}': {reason(exc)}") from None
        defaults[param.name] = converted
    return defaults
