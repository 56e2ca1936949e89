"""Render one definition file: a Jinja2 template, sandboxed and strict.

The template is whatever a pusher wrote, so it runs in Jinja2's SandboxedEnvironment (no
attribute of Python's internals, no `__class__` walks), with StrictUndefined (a name the
context lacks is an error, never an empty string) and autoescape off (the output is JSON,
not HTML). It sees `app`, `revision`, `image` and three functions whose values the caller
looks up (they need I/O): `env(NAME)`, `ssm(NAME)` and `secret_arn(NAME)`.

Rendering is pure: a lookup the caller has not made yet stops the render with NeedLookup,
the caller makes it and renders again (app/stages/definitions.py), so no template can make
this module wait on AWS.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

FUNCTIONS = ("env", "ssm", "secret_arn")
# A template's output is a task definition; anything far larger is a mistake or an attack.
MAX_OUTPUT = 1_000_000


class _Bounded(SandboxedEnvironment):
    """The sandbox, with `*` and `**` unable to build a huge string, list or number."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(
        self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any
    ) -> Any:
        if operator == "**" and isinstance(right, int | float) and abs(right) > 64:
            raise TemplateError("an exponent above 64")
        if operator == "*" and _sized(left, right) > MAX_OUTPUT:
            raise TemplateError(f"a product longer than {MAX_OUTPUT}")
        return super().call_binop(context, operator, left, right)


def _sized(left: Any, right: Any) -> int:
    for seq, times in ((left, right), (right, left)):
        if isinstance(seq, str | list | tuple) and isinstance(times, int):
            return len(seq) * times
    return 0


class TemplateError(ValueError):
    """The template cannot be rendered: one line naming the file and where."""


@dataclass(frozen=True)
class NeedLookup(Exception):
    """The render needs `function(name)` looked up before it can go on."""

    function: str
    name: str


Lookups = Mapping[tuple[str, str], str]


def render_template(
    text: str,
    *,
    file: str,
    values: Mapping[str, str],
    lookups: Lookups,
    refuse: Callable[[str, str], str | None] = lambda function, name: None,
) -> str:
    """`text` rendered with `values` (app, revision, image) and the looked-up `lookups`
    ((function, name) -> value). Raises NeedLookup for a lookup not in `lookups`, and
    TemplateError for a template that is wrong (or a lookup `refuse` says may not be made,
    with its reason)."""
    env = _Bounded(undefined=jinja2.StrictUndefined, autoescape=False)
    env.globals.clear()  # no range(), dict(), lipsum(), cycler(): nothing but the below

    def function(kind: str) -> Callable[[object], str]:
        def look_up(name: object) -> str:
            if not isinstance(name, str) or not name:
                raise TemplateError(f"{file}: {kind}() takes a non-empty name")
            why = refuse(kind, name)
            if why:
                raise TemplateError(f"{file}: {kind}({name!r}): {why}")
            found = lookups.get((kind, name))
            if found is None:
                raise NeedLookup(kind, name)
            return found

        return look_up

    context = {**values, **{kind: function(kind) for kind in FUNCTIONS}}
    try:
        template = env.from_string(text)
        rendered = template.render(context)
    except NeedLookup:
        raise
    except TemplateError as exc:
        message = str(exc)
        raise TemplateError(message if message.startswith(file) else f"{file}: {message}") from exc
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"{file}:{exc.lineno}: template syntax: {exc.message}") from exc
    except jinja2.UndefinedError as exc:
        raise TemplateError(f"{file}: template: {exc.message}") from exc
    except jinja2.exceptions.SecurityError as exc:
        raise TemplateError(f"{file}: template refused: {exc}") from exc
    except (jinja2.TemplateError, ArithmeticError, TypeError, ValueError) as exc:
        raise TemplateError(f"{file}: template: {type(exc).__name__}: {exc}") from exc
    if len(rendered) > MAX_OUTPUT:
        raise TemplateError(f"{file}: rendered to more than {MAX_OUTPUT} characters")
    return rendered
