"""User-facing errors.

Every problem a user can cause (a bad file, a bad flag, a bad partition) raises a :class:`SurveyMassError`
subclass whose message is one line naming the file, partition or row at fault. The command line prints that
line and exits non-zero; it never shows a traceback for these.
"""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none): what a one-line error quotes.

    >>> first_line(ValueError("bad value\\nmore detail"))
    'bad value'
    """
    return (str(exc).splitlines() or [""])[0] or type(exc).__name__


class SurveyMassError(Exception):
    """Base class of errors whose message is meant for the user, in one line."""

    exit_code: int = 2


class FootprintError(SurveyMassError):
    """A footprint specification that cannot be turned into a sky region."""


class CatalogInputError(SurveyMassError):
    """A candidate catalog that is missing columns or has bad rows."""


class StoreError(SurveyMassError):
    """A cutout store that does not follow the store contract."""


class IngestError(SurveyMassError):
    """SDSS frames that cannot be read into cutouts."""


class PipelineError(SurveyMassError):
    """A pipeline definition that does not validate."""


class CatalogError(SurveyMassError):
    """A catalog path or write that cannot be used."""


class StorageError(SurveyMassError):
    """A storage location (a URL, an object store) that cannot be used as asked."""


class ModelError(SurveyMassError):
    """A model directory that cannot be used."""


#: what a full, read-only or refused filesystem says (errno names): one line for the user, never a traceback
_DISK_ERRNOS = ("ENOSPC", "EROFS", "EACCES", "EPERM", "EDQUOT", "EFBIG")
_DISK_MESSAGES = (
    "No space left on device",
    "Read-only file system",
    "Permission denied",
    "Disk quota exceeded",
)


def disk_failure(exc: BaseException) -> str | None:
    """One line for a filesystem that refused a read or write (full, read-only, no permission), naming the file
    where the error does; None for anything else.

    >>> disk_failure(OSError(28, "No space left on device", "/data/out/masses"))
    "'/data/out/masses': No space left on device (free some space or choose another location)"
    """
    import errno as errno_

    if not isinstance(exc, OSError):
        return None
    names = {getattr(errno_, n, None) for n in _DISK_ERRNOS} - {None}
    text = str(exc)
    if exc.errno not in names and not any(m in text for m in _DISK_MESSAGES):
        return None
    what = exc.strerror or next(
        (m for m in _DISK_MESSAGES if m in text), text.splitlines()[0] if text else ""
    )
    where = f"{exc.filename!r}: " if exc.filename else ""
    hint = {
        errno_.ENOSPC: "free some space or choose another location",
        errno_.EROFS: "the filesystem is read-only; choose another location",
    }.get(exc.errno, "check the location and its permissions")
    if "No space left" in text:
        hint = "free some space or choose another location"
    return f"{where}{what} ({hint})"
