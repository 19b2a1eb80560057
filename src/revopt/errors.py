"""Exceptions raised by revopt.

The hierarchy::

    RevoptError
    ├── InputError (ValueError)          bad input data: file, row, column, value and fix
    │   ├── ColumnMappingError           required columns missing, ambiguous or mapped twice
    │   └── ParseError                   dates or amounts that do not parse
    ├── ConfigError (ValueError)         an option or parameter out of its allowed range
    ├── NotFittedError (RuntimeError)    a model used before ``fit``
    └── FitError (RuntimeError)          the optimizer failed; the message names status and remedy

Every error carries a one-line message meant for the operator; the CLI prints it and exits with
status 2 for input and configuration errors.
"""

from __future__ import annotations

__all__ = [
    "RevoptError",
    "InputError",
    "ColumnMappingError",
    "ParseError",
    "ConfigError",
    "NotFittedError",
    "FitError",
    "RevoptWarning",
    "ConvergenceWarning",
    "DataQualityWarning",
    "check_range",
]


class _CatalogText:
    """Mixin for exceptions and warnings whose text can come from the message catalog.

    Raised with ``message_id``, the text is the catalog entry, so the CLI can show it in the
    operator's language with :meth:`localized`. ``str()`` is the English text.
    """

    def __init__(self, text: str | None = None, /, *, message_id: str | None = None, **fields) -> None:
        self.message_id = message_id
        self.fields = fields
        super().__init__(text if text is not None else self.localized("en"))

    def localized(self, language: str) -> str:
        """Return the message in ``language`` where the catalog has it, else the English text.

        A field that itself has catalog text (a detail such as the first bad row) is localized too.
        """
        if self.message_id is None:
            return str(self)
        from revopt.i18n import message

        fields = {
            name: value.localized(language) if isinstance(value, _CatalogText) else value
            for name, value in self.fields.items()
        }
        return message(self.message_id, language, **fields)


class RevoptError(_CatalogText, Exception):
    """Base class of every error raised by revopt."""


class InputError(RevoptError, ValueError):
    """Input data that cannot be used as given."""


class ColumnMappingError(InputError):
    """Required columns are missing or ambiguous, or one column is mapped twice."""


class ParseError(InputError):
    """Values in a column do not parse as the field they are mapped to."""


class ConfigError(RevoptError, ValueError):
    """An option or parameter outside its allowed values."""


class NotFittedError(RevoptError, RuntimeError):
    """A model method that needs fitted parameters was called before ``fit``."""


class FitError(RevoptError, RuntimeError):
    """Maximum-likelihood fitting failed."""


class RevoptWarning(_CatalogText, UserWarning):
    """Base class of revopt's warnings."""


class ConvergenceWarning(RevoptWarning):
    """The optimizer stopped without meeting its convergence criterion."""


class DataQualityWarning(RevoptWarning):
    """Input data was usable but something in it deserves the analyst's attention."""


def check_range(
    name: str,
    value: float,
    *,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> float:
    """Raise :class:`ConfigError` unless ``low <= value <= high`` (bounds optional, inclusivity set per side).

    Every range check goes through here so that every message has one shape:
    the parameter, the allowed range and the value received.
    """
    too_low = low is not None and (value < low if low_inclusive else value <= low)
    too_high = high is not None and (value > high if high_inclusive else value >= high)
    if too_low or too_high or value != value:  # value != value is True only for NaN
        left = "[" if low_inclusive else "("
        right = "]" if high_inclusive else ")"
        low_text = "-inf" if low is None else f"{low:g}"
        high_text = "inf" if high is None else f"{high:g}"
        raise ConfigError(message_id="errors.out_of_range", name=name,
                          interval=f"{left}{low_text}, {high_text}{right}", value=repr(value))
    return value
