"""Errors a user can cause. The CLI prints them as one line and exits with code 2."""


class EdgetuneError(Exception):
    """Base class for errors caused by input (names, values, files), not by a bug."""


class UsageError(EdgetuneError, ValueError):
    """A bad name or value: the message names the field, the value and what is allowed."""


class DiskFullError(EdgetuneError):
    """The disk filled up (ENOSPC, or a quota) while edgetune wrote a file."""


def is_disk_full(error: BaseException) -> bool:
    import errno

    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)
