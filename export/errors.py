"""The one error type of the export stage: the CLI prints it and exits with status 2."""

from __future__ import annotations


class ExportError(Exception):
    """Bad input (model, patch or serving folder); the message says what to do."""


class ChecksumError(ExportError):
    """A serving model's files differ from the manifest written at export."""
