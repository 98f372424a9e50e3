"""Every config field says, where it is declared, which values it takes.

A field declared with `option(default, lo=..., hi=...)` carries its rule in the
dataclass field's metadata; `validate(obj)` checks every field of a config dataclass
(type, finite, range, choices) and raises one `ExaptError` line naming the option. The
config dataclasses call it on construction and `apply_override` after each `--set`, so
no value that would train silently wrong (a negative clip, a warm-up above 1, an
infinite learning rate, a seed numpy cannot take) gets past the front door.

The same rules guard the command line: `harden_parser` makes every int / float option
of every sub-command refuse non-finite and out-of-range numbers in one line, lets
negative numbers parse (`--lr -1e-3` reaches the range check instead of argparse's
"expected one argument"), and bounds every `--seed`.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import numbers
import re
import types
import typing

from .errors import ExaptError

SEED_MAX = 2**32 - 1   # numpy's and torch's seeds are unsigned 32-bit
INT_MAX = 2**63 - 1    # anything larger overflows a torch / numpy int64


def option(default, *, lo=None, hi=None, lo_open=False, hi_open=False, choices=None, flag=None, message=None,
           parse=None):
    """A dataclass field with its rule: `lo`/`hi` bounds (open or closed), `choices`, the
    user-facing `flag` the message names (default: section.field), or a `message`
    template ({name}, {value}) where an existing wording must be kept; `parse(value)`
    checks a spec string (raising one ExaptError line) for a field written in a small
    language of its own (`--long chunk:64,pool=attention`)."""
    rule = {"lo": lo, "hi": hi, "lo_open": lo_open, "hi_open": hi_open, "choices": choices, "flag": flag,
            "message": message, "parse": parse}
    return dataclasses.field(default=default, metadata={"rule": rule})


def seed_option(flag="--seed"):
    return option(0, lo=0, hi=SEED_MAX, flag=flag)


def allowed_types(hint) -> tuple[type, ...]:
    """`int | None` -> (int, NoneType); `list[str] | None` -> (list, NoneType)."""
    union = isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
    args = typing.get_args(hint) if union else (hint,)
    return tuple(typing.get_origin(a) or a for a in args)


def validate(obj, section: str = "") -> None:
    """Check every field of the dataclass `obj` against its declared type and rule."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        rule = f.metadata.get("rule", {})
        name = rule.get("flag") or (f"{section}.{f.name}" if section else f.name)
        check_value(name, getattr(obj, f.name), allowed_types(hints[f.name]), rule)


def check_value(name: str, value, allowed: tuple[type, ...], rule: dict) -> None:
    numeric = bool({int, float} & set(allowed))
    if value is None:  # (a str field left None is resolved later, e.g. the model's default)
        if type(None) not in allowed and (numeric or bool in allowed):
            raise ExaptError(f"{name} must be set (got none)")
        return
    if numeric and not (bool in allowed and isinstance(value, bool)):
        _check_number(name, value, allowed, rule)
    elif bool in allowed and not isinstance(value, bool) and len(allowed) <= 2:
        raise ExaptError(f"{name} must be true or false (got {value!r})")
    if rule.get("parse"):
        rule["parse"](value)
    if rule.get("choices") and value not in rule["choices"]:
        if rule.get("message"):
            raise ExaptError(rule["message"].format(name=name, value=value))
        raise ExaptError(f"{name} must be one of {', '.join(map(str, rule['choices']))} (got {value!r})")


def _check_number(name: str, value, allowed, rule: dict) -> None:
    whole = float not in allowed
    kind = numbers.Integral if whole else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind):
        raise ExaptError(f"{name} must be {'a whole number' if whole else 'a number'} (got {value!r})")
    if not whole and not math.isfinite(value):
        raise ExaptError(f"{name} must be a finite number (got {value})")
    lo, hi, lo_open, hi_open = rule.get("lo"), rule.get("hi"), rule.get("lo_open"), rule.get("hi_open")
    below = lo is not None and (value <= lo if lo_open else value < lo)
    above = hi is not None and (value >= hi if hi_open else value > hi)
    if not (below or above):
        if whole and abs(int(value)) > INT_MAX:
            raise ExaptError(f"{name} is too large (got {value})")
        return
    if rule.get("message"):
        raise ExaptError(rule["message"].format(name=name, value=value))
    if lo is not None and hi is not None:
        span = f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    elif lo is not None:
        span = f"{'>' if lo_open else '>='} {lo}"
    else:
        span = f"{'<' if hi_open else '<='} {hi}"
    raise ExaptError(f"{name} must be {span} (got {value})")


# -- the command line -----------------------------------------------------------------
# argparse takes "-1e-3" for an option (its own pattern knows only -1 and -.5); this one
# also knows exponents, inf and nan, so the value reaches its check and gets its message.
NEGATIVE_NUMBER = re.compile(r"^-(\d[\d_]*\.?\d*|\.\d+)([eE][-+]?\d+)?$|^-(inf|infinity|nan)$", re.IGNORECASE)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number (got {text})")
    return value


def _bounded_int(text: str) -> int:
    value = int(text)
    if abs(value) > INT_MAX:
        raise argparse.ArgumentTypeError(f"is too large (got {text})")
    return value


def _seed(text: str) -> int:
    value = int(text)
    if not 0 <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"must be in [0, {SEED_MAX}] (got {text})")
    return value


# argparse names the type in "invalid float value: 'x'": keep those words
_finite_float.__name__, _bounded_int.__name__, _seed.__name__ = "float", "int", "int"


def harden_parser(parser: argparse.ArgumentParser) -> None:
    """Number options of `parser` and all its sub-commands refuse inf, nan, ints beyond
    int64 and seeds beyond 32 bits, and negative numbers parse as values."""
    parser._negative_number_matcher = NEGATIVE_NUMBER
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in set(action.choices.values()):
                harden_parser(sub)
        elif action.type is float:
            action.type = _finite_float
        elif action.type is int:
            action.type = _seed if action.dest == "seed" else _bounded_int


# -- rare classes (docs/rare-classes.md): the specs of --class-weight, --loss, --target-recall
def parse_class_values(spec: str, flag: str, lo: float, hi: float | None = None) -> dict[str, float]:
    """`CLASS=V,CLASS=V` -> {class: V}, each V a finite number in [lo, hi] (lo excluded
    when 0: a weight of 0 would drop a class). Class names are checked against the task
    later, when the classes are known."""
    out: dict[str, float] = {}
    for part in str(spec).split(","):
        name, sep, raw = part.strip().rpartition("=")
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not sep or not name.strip() or not math.isfinite(value):
            raise ExaptError(f"{flag} {spec!r}: write CLASS=NUMBER[,CLASS=NUMBER...], e.g. negative=0.9")
        if value < lo or (lo == 0 and value == 0) or (hi is not None and value > hi):
            span = f"in {'(' if lo == 0 else '['}{lo:g}, {hi:g}]" if hi is not None else f"> {lo:g}"
            raise ExaptError(f"{flag} {spec!r}: {name.strip()}'s value must be {span} (got {value:g})")
        out[name.strip()] = value
    return out


def parse_class_weight(spec: str | None) -> dict[str, float] | str | None:
    """None (every class 1), `balanced` (n / (k * n_class), scikit-learn's rule) or
    explicit `CLASS=W,...` (classes not named keep 1)."""
    if spec is None or spec == "balanced":
        return spec
    return parse_class_values(spec, "--class-weight", 0.0)


def parse_loss(spec: str) -> float | None:
    """`cross-entropy` -> None; `focal[:gamma]` -> gamma (default 2, Lin et al. 2017)."""
    name, _, raw = str(spec).partition(":")
    if name == "cross-entropy" and not raw:
        return None
    if name != "focal":
        raise ExaptError(f"--loss {spec!r}: choose cross-entropy or focal[:gamma]")
    try:
        gamma = float(raw) if raw else 2.0
    except ValueError:
        raise ExaptError(f"--loss {spec!r}: gamma must be a number, e.g. focal:2") from None
    if not math.isfinite(gamma) or gamma < 0:
        raise ExaptError(f"--loss {spec!r}: focal gamma must be a finite number >= 0 (got {raw})")
    return gamma


def parse_target_recall(spec: str | None) -> dict[str, float]:
    return {} if spec is None else parse_class_values(spec, "--target-recall", 0.0, 1.0)
