"""Exceptions users can act on: each names what was wrong and what to do about it."""


class CreditGymError(Exception):
    """Base class of every error creditgym raises on purpose."""


class ConfigError(CreditGymError, ValueError):
    """A configuration value or key is invalid (unknown key, wrong type, out of range)."""


class RetrievalError(CreditGymError, RuntimeError):
    """A retrieval backend could not be built, opened or reached."""


class CorpusFormatError(CreditGymError, ValueError):
    """A corpus file is not in the wiki-18 JSONL form (``{"id": ..., "contents": ...}`` per line)."""


class ToolDefinitionError(CreditGymError, TypeError):
    """A Python function cannot be turned into a tool (missing type hint, ``*args``, bad name, ...)."""


class TaskFormatError(CreditGymError, ValueError):
    """A task file (Search-R1 parquet/JSONL) is missing, unreadable, or a row lacks a needed field."""


class EnvUsageError(CreditGymError, RuntimeError):
    """An environment was driven out of order (``step`` before ``reset``, after the episode ended, ...)."""
