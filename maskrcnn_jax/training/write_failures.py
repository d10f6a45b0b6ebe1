"""Files a run could not write (a full disk, an unwritable path): one error naming what and where."""

import contextlib
import errno
import os
import re

# TensorStore (Orbax's array writer) reports the OS error only in its message text.
_TENSORSTORE_OS_ERROR = re.compile(r"os_error_code='(\d+)'")


class WriteFailedError(RuntimeError):
    """A file of the training run could not be written; the message says which, where and why."""


def reason(error: BaseException) -> str:
    """Why a file operation failed, in a few words: the OS error when there is one ("No space left
    on device"), else the first line of the message of the error's first cause (Orbax raises
    "Encountered error while reading array index ... <a whole TensorStore spec>" from the
    TensorStore error that names the file and what is wrong with it)."""
    while error.__cause__ is not None:
        error = error.__cause__
    code = getattr(error, "errno", None)
    if code is None:
        match = _TENSORSTORE_OS_ERROR.search(str(error))
        code = int(match.group(1)) if match else None
    if code in errno.errorcode:
        return os.strerror(code)
    first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return first_line if len(first_line) <= 300 else first_line[:300] + " ..."


@contextlib.contextmanager
def naming(what: str, where: str | os.PathLike, errors: tuple[type[BaseException], ...] = (OSError,)):
    """Turns `errors` raised in the block into WriteFailedError("could not write WHAT to WHERE: REASON")."""
    try:
        yield
    except errors as error:
        raise WriteFailedError(f"could not write {what} to {where}: {reason(error)}") from error
