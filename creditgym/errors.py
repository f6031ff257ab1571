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


class OutputPathError(CreditGymError, ValueError):
    """An output path would overwrite one of the command's inputs, or an existing file without ``--force``."""


class UntrustedFileError(CreditGymError, ValueError):
    """A file names code to import or a path/URL to follow that the user has not allowed."""


class GenerationCancelled(CreditGymError, RuntimeError):
    """A generation was stopped on request (the client left, the server is shutting down)."""


class BadRequest(CreditGymError, ValueError):
    """An HTTP request a creditgym server refuses: the message goes back to the client as is.

    ``status`` is the 4xx answer (400 by default; 408, 413, 415, 422, ... where they fit) and
    ``param`` the offending request field, if any (the policy server reports it, OpenAI-style).
    """

    def __init__(self, message: str, status: int = 400, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.param = param


class EnvSpecError(ConfigError):
    """An environment id cannot be resolved (not registered, not importable, not an environment)
    or the environment rejects its options; raised before anything is created."""
