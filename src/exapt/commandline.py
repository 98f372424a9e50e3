"""The command a report was made with, as the user would type it again."""
from __future__ import annotations

import shlex


def typed_command(words: list[str], args, defaults: dict, skip=(), always=()) -> str:
    """`words` (already typed positionals), then every option of `args` that differs from
    `defaults` (or is named in `always`), as `--name value`; `skip` names what to leave out."""
    parts = [shlex.quote(w) for w in words]
    for key, value in vars(args).items():
        if key in ("command", "quiet", *skip) or value is None or value is False or (
                key not in always and value == defaults.get(key)):
            continue
        parts.append(f"--{key.replace('_', '-')}")
        if value is not True:
            parts.append(shlex.quote(str(value)))
    return " ".join(parts)
