"""Errors raised for bad formats and configurations; both are ValueErrors so callers can catch either."""


class FormatError(ValueError):
    """A float format string or parameter that cannot be built or simulated exactly."""


class ConfigError(ValueError):
    """A MAC configuration that is inconsistent or outside what the toolkit supports."""
