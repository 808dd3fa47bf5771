"""User-facing errors.

Every problem a user can cause (a bad file, a bad flag, a bad partition) raises a :class:`SurveyMassError`
subclass whose message is one line naming the file, partition or row at fault. The command line prints that
line and exits non-zero; it never shows a traceback for these.
"""

from __future__ import annotations


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
