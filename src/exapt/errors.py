"""The one exception type users see.

Anything the user can fix (a wrong path, a missing column, a bad option) raises
`ExaptError` with a single line that names the file, row, column or option at fault.
The CLI prints that line and exits 2; it never shows a traceback for these.
"""

# Every character str.splitlines() breaks at: a column name or file content quoted in a
# message must not split its one line (shown escaped, as repr would).
_LINE_BREAKS = {ord(c): repr(c)[1:-1] for c in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"}


class ExaptError(Exception):
    """A problem with the user's input or options, stated in one line."""

    def __str__(self) -> str:
        return super().__str__().strip().translate(_LINE_BREAKS)


class StrategyDoesNotFit(ExaptError):
    """The strategy cannot run on the chosen model (LoRA on an mlp, freeze:4 of 2 blocks):
    `compare` drops such a strategy from its default panel instead of stopping."""
