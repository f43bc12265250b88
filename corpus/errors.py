"""The corpus package's errors: each is a one-line message for the user (exit code 2)."""


class CorpusError(Exception):
    """Bad input or an unusable output folder."""


class DataError(Exception):
    """A data set that cannot be found, read or converted."""


class TableError(Exception):
    """A benchmark table or latency table that is missing, malformed, or does not hold a network."""
