"""Turning Spark's wrapped Python/Java exceptions back into the message that matters."""

from __future__ import annotations

import re

# Errors about the data (bad input file, feature tables that do not match) as opposed to bugs.
_INPUT_ERROR = re.compile(r"(?:DelphesInputError|DatasetInputError): (?P<msg>[^\n]+)")


def input_error_message(exc: BaseException) -> str | None:
    """The message of a data error (``DelphesInputError``, ``DatasetInputError``) raised in a Spark task."""
    text = f"{exc}"
    cause = exc.__cause__ or exc.__context__
    while cause is not None:
        text += f"\n{cause}"
        cause = cause.__cause__ or cause.__context__
    m = _INPUT_ERROR.search(text)
    return m["msg"].strip() if m else None
