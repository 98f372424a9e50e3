"""The one exception type users see.

Anything the user can fix (a wrong path, a missing column, a bad option) raises
`ExaptError` with a single line that names the file, row, column or option at fault.
The CLI prints that line and exits 2; it never shows a traceback for these.
"""


class ExaptError(Exception):
    """A problem with the user's input or options, stated in one line."""
