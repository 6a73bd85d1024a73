"""Why a report cannot be produced. Messages are safe to show to the user: they name fields, never patient data."""


class ReportError(ValueError):
    """Base class of every report failure the API maps to a 4xx answer."""


class ReportInputError(ReportError):
    """The case record handed to a report is incomplete or inconsistent (a 422 for the API)."""


class UnknownReportKindError(ReportError):
    """The requested report kind does not exist (a 400 for the API)."""
