"""The project's exception for mistakes in what the user gave: a flag, a file, a field, a combination of options.

A [`UserError`] carries a message that names what is wrong and the fix. The command lines print it as one line
(`ilrec-train: error: ...`) and exit with status 2, as argparse does for a bad flag; `ILREC_DEBUG=1` shows the
traceback. Anything else (a bug, an out-of-memory error) keeps its traceback. It is a `ValueError`, so code that
catches `ValueError` keeps working.
"""


class UserError(ValueError):
    """Bad input from the user (a flag, a file, a field): the message says what is wrong and how to fix it."""


class UserFileError(UserError, FileNotFoundError):
    """A file or folder the user named does not exist or is not what it should be."""
