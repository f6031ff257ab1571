"""Policy backends by name: one registry for ``creditgym eval``, the trainer and user code.

``make_backend(name, **options)`` opens a registered backend with its own options;
``BACKENDS`` maps every registered name to its entry. Built in:

* ``transformers``: ``make_backend("transformers", model=FOLDER_OR_MODULE, tokenizer=None,
  seed=None, device=..., dtype=..., max_batch_size=..., max_context=...)``
  (:class:`~creditgym.agents.hf_backend.TransformersBackend`);
* ``vllm``: ``make_backend("vllm", model=FOLDER, **engine_kwargs)`` (in-process vLLM, NVIDIA GPU,
  ``pip install 'creditgym[vllm]'``; imported only when opened);
* ``openai`` and its alias ``http``: ``make_backend("openai", url=BASE_URL, model=NAME, ...)``
  (an OpenAI-compatible server such as ``vllm serve`` or ``creditgym serve-policy``).

A backend registers with ``@register_backend(name, trainer=..., requires=(...))`` on a function
``open(**options) -> PolicyBackend``. ``trainer(policy: TrainingPolicy)`` builds it over the
trainer's live weights (``rollout.backend`` of ``creditgym train`` names one of those:
:func:`trainable_backends`); without it the backend cannot be trained (an HTTP server has no
weight-update path). ``requires`` names modules that must be importable (checked by
:func:`backend_problem` before anything is built), ``install`` says how to get them.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from creditgym.errors import ConfigError


@dataclass(frozen=True)
class TrainingPolicy:
    """What the trainer hands a backend: its live model and where that model's files are."""

    model: Any
    """The trained ``PreTrainedModel`` (the transformers backend generates with it directly)."""
    tokenizer: Any
    """Its tokenizer."""
    model_dir: str
    """A Hugging Face folder with the same architecture and tokenizer (what vLLM loads first,
    before it receives ``model``'s weights)."""
    seed: int | None = None
    """Seed for requests without their own."""
    options: dict[str, Any] = field(default_factory=dict)
    """Engine options of the run's config (``gpu_memory_utilization``, ``max_model_len``,
    ``enforce_eager``, ``enable_sleep_mode``); a backend uses those it knows."""
    weights: Callable[[], Iterable[tuple[str, Any]]] | None = None
    """The policy's weights as ``(Hugging Face name, tensor)`` pairs (LoRA adapters merged);
    None: ``model.state_dict()``. What an engine with its own copy of the weights loads."""


@dataclass(frozen=True)
class BackendEntry:
    """One registered backend."""

    name: str
    open: Callable[..., Any]
    """``open(**options) -> PolicyBackend``."""
    trainer: Callable[[TrainingPolicy], Any] | None = None
    """Builds it over the trainer's weights (keeping them in sync); None: not trainable."""
    requires: tuple[str, ...] = ()
    """Modules that must be importable."""
    install: str = ""
    """How to install ``requires``."""

    @property
    def trainable(self) -> bool:
        return self.trainer is not None


BACKENDS: dict[str, BackendEntry] = {}
"""Registered backends by name, in registration order."""


def register_backend(name: str, *, trainer: Callable[[TrainingPolicy], Any] | None = None,
                     requires: tuple[str, ...] = (), install: str = ""
                     ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering ``open(**options)`` as backend ``name``. A name registered by
    another function is an error (registering one function under several names is fine)."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"register_backend: name must be a non-empty string, got {name!r}")

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        old = BACKENDS.get(name)
        if old is not None and _origin(old.open) != _origin(fn):
            raise ConfigError(f"backend {name!r} is already registered by {_origin(old.open)}; "
                              f"choose another name for {_origin(fn)}")
        BACKENDS[name] = BackendEntry(name, fn, trainer, tuple(requires), install)
        return fn

    return decorate


def unregister_backend(name: str) -> None:
    """Remove backend ``name`` (tests, reloading a plugin); unknown names are ignored."""
    BACKENDS.pop(name, None)


def _origin(fn: Callable) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def trainable_backends() -> list[str]:
    """Names ``rollout.backend`` of ``creditgym train`` accepts."""
    return [n for n, e in BACKENDS.items() if e.trainable]


def backend_problem(name: Any, *, training: bool = False, label: str = "backend") -> str | None:
    """Why backend ``name`` cannot be used (unknown, not trainable when ``training``, a required
    module missing), as one message naming ``label``; None when it can. Builds nothing."""
    choices = trainable_backends() if training else list(BACKENDS)
    entry = BACKENDS.get(name) if isinstance(name, str) else None
    if entry is None:
        return (f"{label}={name!r}: unknown backend; choose one of {', '.join(choices)} "
                f"(registered: {', '.join(BACKENDS)})")
    if training and not entry.trainable:
        return (f"{label}={name}: this backend cannot be trained (it has no weight-update path, "
                f"e.g. a remote HTTP server); choose one of {', '.join(choices)}")
    missing = [m for m in entry.requires if importlib.util.find_spec(m) is None]
    if missing:
        how = entry.install or f"pip install {' '.join(missing)}"
        others = [c for c in choices if c != name]
        return (f"{label}={name}: {', '.join(missing)} is not installed ({how}), "
                f"or use one of {', '.join(others)}")
    return None


def _entry(name: Any, *, training: bool = False) -> BackendEntry:
    entry = BACKENDS.get(name) if isinstance(name, str) else None
    if entry is None or (training and not entry.trainable):
        raise ConfigError(backend_problem(name, training=training) or f"backend {name!r}")
    return entry


def make_backend(name: str, **options: Any) -> Any:
    """Open the registered backend ``name`` with its own ``options``."""
    return _entry(name).open(**options)


def make_training_backend(name: str, policy: TrainingPolicy) -> Any:
    """Backend ``name`` over the trainer's live weights (see :class:`TrainingPolicy`)."""
    return _entry(name, training=True).trainer(policy)


# ------------------------------------------------------------------------- built-in backends


def _transformers_for_training(policy: TrainingPolicy) -> Any:
    from creditgym.agents.hf_backend import TransformersBackend

    # Generates with the trained module itself: weights are in sync by construction.
    return TransformersBackend(policy.model, tokenizer=policy.tokenizer, seed=policy.seed)


@register_backend("transformers", trainer=_transformers_for_training)
def open_transformers(model: Any, **options: Any) -> Any:
    """In-process transformers: ``model`` is a folder, a hub id or a loaded model."""
    from creditgym.agents.hf_backend import TransformersBackend

    return TransformersBackend(model, **options)


_VLLM_OPTIONS = ("gpu_memory_utilization", "max_model_len", "enforce_eager", "enable_sleep_mode")
_VLLM_INSTALL = "pip install 'creditgym[vllm]' on a machine with an NVIDIA GPU"


def vllm_training_options(options: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """The options a training run's vLLM engine is built with (besides the backend's own,
    ``vllm_backend.engine_options``): the run's seed and the engine options it set."""
    return {"seed": seed, **{k: options[k] for k in _VLLM_OPTIONS if k in options}}


def _vllm_for_training(policy: TrainingPolicy) -> Any:
    from creditgym.agents.vllm_backend import VLLMBackend

    # vLLM loads from a folder, then gets the trainer's current weights (a warm start's, a
    # resumed run's checkpoint) through load_weights.
    backend = VLLMBackend(str(policy.model_dir), **vllm_training_options(policy.options,
                                                                         policy.seed))
    backend.load_weights(policy.weights() if policy.weights else policy.model.state_dict())
    return backend


@register_backend("vllm", trainer=_vllm_for_training, requires=("vllm",), install=_VLLM_INSTALL)
def open_vllm(model: Any, **engine_kwargs: Any) -> Any:
    """In-process vLLM engine on ``model`` (a folder or hub id); options go to ``vllm.LLM``."""
    from creditgym.agents.vllm_backend import VLLMBackend

    return VLLMBackend(str(model), **engine_kwargs)


@register_backend("http")
@register_backend("openai")
def open_openai(url: str, model: str | None = None, **options: Any) -> Any:
    """An OpenAI-compatible completions server at base ``url`` serving ``model``."""
    from creditgym.agents.openai_backend import OpenAICompatibleBackend

    return OpenAICompatibleBackend(url, model, **options)
