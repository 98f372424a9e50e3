"""The class names as extra examples for the linear probe (`linear-probe:names=R`,
`lp-ft:names=R`).

A sentence encoder already places "negative" near negative tweets, so each class's name,
added R times to the probe's training examples as an example of that class, is a free
labelled example in the right region of feature space. SetFit adds templated label examples for
the same reason (`get_templated_dataset`). On the tweets' development panel the bare name
beat "This sentence is {name}", and R = 2 helped the probe at 8 and 16 tweets per class
(docs/compare.md). Only the probe sees them: `lp-ft`'s fine-tuning stage, validation and
test never do.
"""
from __future__ import annotations

import numpy as np

from ..errors import ExaptError
from .columns import Table

NAME_ROW = 0  # the added rows point at no line of the data file


def class_name_table(table: Table, classes: list[str], copies: int, spec: str) -> Table:
    """`copies` rows per class whose text is the class name, labelled with that class;
    `table` (the training split) only says what kind of input the names must match."""
    if table.kind != "text":
        raise ExaptError(f"--strategy {spec}: names= adds the class names as text examples, but {table.source} "
                         f"holds {table.kind} inputs")
    if all(_is_number(c) for c in classes):
        raise ExaptError(f"--strategy {spec}: the class names ({', '.join(classes[:5])}) are numbers, which say "
                         "nothing as text; name the classes in the label column (e.g. negative/positive) or drop names=")
    names = [c for _ in range(copies) for c in classes]
    return Table(names, list(names), "text", "the class names", np.full(len(names), NAME_ROW))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
