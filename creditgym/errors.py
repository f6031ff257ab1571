"""Exceptions users can act on: each names what was wrong and what to do about it."""


class CreditGymError(Exception):
    """Base class of every error creditgym raises on purpose."""


class ConfigError(CreditGymError, ValueError):
    """A configuration value or key is invalid (unknown key, wrong type, out of range)."""


class RetrievalError(CreditGymError, RuntimeError):
    """A retrieval backend could not be built, opened or reached."""


class CorpusFormatError(CreditGymError, ValueError):
    """A corpus file is not in the wiki-18 JSONL form (``{"id": ..., "contents": ...}`` per line)."""
