"""Name rules shared by every definition: snake_case, checked when the definition is made."""

import re

_SNAKE_CASE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")


class DefinitionError(ValueError):
    """A feature definition that cannot work; the message says which one and why."""


def check_snake_case(what: str, name: str) -> None:
    if not isinstance(name, str) or not _SNAKE_CASE.match(name):
        raise DefinitionError(f"{what} name {name!r} must be snake_case (lowercase letters, digits, single underscores)")
