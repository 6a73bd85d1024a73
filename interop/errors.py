"""Errors of the exports; api/errors.py maps them to HTTP statuses."""

from __future__ import annotations


class ExportError(ValueError):
    """Base of every export error."""


class ExportInputError(ExportError):
    """The case cannot be written as DICOM or FHIR (a field the format needs is missing or malformed): 422."""
