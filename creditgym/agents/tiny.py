"""Tiny local causal LMs for tests, examples and CPU smoke runs, built offline in seconds.

``build_tiny_model(out_dir, texts)`` trains a byte-level BPE tokenizer on ``texts`` (any Unicode
round-trips exactly), wraps it as a ``PreTrainedTokenizerFast`` with a Qwen-style ChatML chat
template, builds a randomly initialised ``LlamaForCausalLM`` of matching vocabulary and saves
both as an ordinary Hugging Face folder::

    from creditgym.agents.tiny import build_tiny_model
    path = build_tiny_model("runs/tiny", texts)
    tok = AutoTokenizer.from_pretrained(path); model = AutoModelForCausalLM.from_pretrained(path)

Nothing is downloaded. The build is deterministic (same texts and config give byte-identical
``tokenizer.json`` and weights) and atomic (a killed build leaves no half-written model).

Tokens: ``<|endoftext|>`` (padding), ``<|im_start|>``, ``<|im_end|>`` (end of turn: generation
stops there, it is ``eos_token``) are special; the agent tags (``<think>``, ``<search>``,
``<answer>``, ``<information>``, ``<tool_call>``, ...) are ordinary added tokens: atomic, and
decoded verbatim even with ``skip_special_tokens=True``.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from creditgym.errors import ConfigError
from creditgym.files import atomic_dir

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS: tuple[str, ...] = (ENDOFTEXT, IM_START, IM_END)
"""Control tokens of the ChatML format (ids 0, 1, 2)."""

TAG_NAMES = ("think", "search", "answer", "information", "result", "tool_call", "judge", "goal")
TAG_TOKENS: tuple[str, ...] = tuple(t for name in TAG_NAMES for t in (f"<{name}>", f"</{name}>"))
"""Tags agents write and read; each is one token so stop strings and parsers see it whole."""

PRETOKENIZE_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
"""Qwen2's pre-tokenisation split: single digits (years stay compositional), words with a
leading space, punctuation runs, newlines."""

CHATML_TEMPLATE = """\
{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages and messages[0].role == 'system' %}
        {{- messages[0].content }}
    {%- else %}
        {{- 'You are a helpful assistant.' }}
    {%- endif %}
    {{- '\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n\
You are provided with function signatures within <tools></tools> XML tags:\\n<tools>' }}
    {%- for tool in tools %}
        {{- '\\n' }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- '\\n</tools>\\n\\nFor each function call, return a json object with function name and \
arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\"name\": <function-name>, \
\"arguments\": <args-json-object>}\\n</tool_call><|im_end|>\\n' }}
{%- endif %}
{%- for message in messages %}
    {%- if tools and loop.first and message.role == 'system' %}
    {%- elif message.role in ['system', 'user', 'tool'] or (message.role == 'assistant' \
and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\\n' + (message.content or '') + '<|im_end|>\\n' }}
    {%- elif message.role == 'assistant' %}
        {{- '<|im_start|>assistant\\n' + (message.content or '') }}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {%- if not loop.first or message.content %}
                {{- '\\n' }}
            {%- endif %}
            {{- '<tool_call>\\n{\"name\": \"' + tool_call.name + '\", \"arguments\": ' }}
            {%- if tool_call.arguments is string %}
                {{- tool_call.arguments }}
            {%- else %}
                {{- tool_call.arguments | tojson }}
            {%- endif %}
            {{- '}\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- else %}
        {{- raise_exception('Unknown chat role ' + message.role + \
': use system, user, assistant or tool') }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""
"""ChatML as in Qwen2.5: every message is ``<|im_start|>{role}\\n{content}<|im_end|>\\n``
(``tool`` keeps its own role, so appending a message never changes earlier text and the
rollout can append template deltas); ``tools`` become JSON schemas in the system message;
``add_generation_prompt`` appends ``<|im_start|>assistant\\n``."""

DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class TinyModelConfig:
    """Size and seed of a tiny tokenizer + Llama model (defaults: ~1M parameters)."""

    vocab_size: int = 3000
    """Target vocabulary size, specials and tags included (a small corpus may give fewer:
    BPE stops when no pair repeats)."""
    hidden_size: int = 128
    """Width of the residual stream."""
    intermediate_size: int = 352
    """Width of each MLP's hidden layer."""
    num_layers: int = 2
    """Transformer blocks."""
    num_heads: int = 4
    """Attention heads (must divide ``hidden_size``)."""
    num_kv_heads: int = 2
    """Key/value heads, grouped-query attention (must divide ``num_heads``)."""
    max_position_embeddings: int = 4096
    """Longest sequence (prompt + completion) the model accepts; also the tokenizer's
    ``model_max_length``."""
    seed: int = 0
    """Seed of the weight initialisation."""
    tie_word_embeddings: bool = True
    """Share the input embedding and output projection (halves the embedding parameters)."""
    dtype: str = "float32"
    """Dtype the weights are saved in: ``float32``, ``bfloat16`` or ``float16``."""
    initializer_range: float = 0.1
    """Std of the normal weight init. Larger than the usual 0.02 on purpose: at 0.02 an untrained
    tiny model (tied embeddings) greedily repeats its last input token; at 0.1 its outputs vary
    with the context, which makes untrained smoke runs and tests meaningful."""
    min_frequency: int = 2
    """A pair must occur this often in the texts to become a BPE merge."""

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> ConfigError:
            return ConfigError(f"TinyModelConfig.{name}={getattr(self, name)!r}: {why}")

        floor = 256 + len(SPECIAL_TOKENS) + len(TAG_TOKENS)
        if self.vocab_size < floor:
            raise bad(
                "vocab_size", f"must be at least {floor} (256 bytes + special and tag tokens)"
            )
        for name in ("hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads"):
            if getattr(self, name) < 1:
                raise bad(name, "must be a positive integer")
        if self.hidden_size % self.num_heads:
            raise bad("hidden_size", f"must be a multiple of num_heads={self.num_heads}")
        if self.num_heads % self.num_kv_heads:
            raise bad("num_kv_heads", f"must divide num_heads={self.num_heads}")
        if self.max_position_embeddings < 16:
            raise bad("max_position_embeddings", "must be at least 16")
        if self.dtype not in DTYPES:
            raise bad("dtype", f"must be one of {', '.join(DTYPES)}")
        if not self.initializer_range > 0:
            raise bad("initializer_range", "must be positive")
        if self.min_frequency < 1:
            raise bad("min_frequency", "must be at least 1")


def build_tiny_model(
    out_dir: str | Path,
    texts: Iterable[str],
    config: TinyModelConfig | None = None,
    *,
    overwrite: bool = False,
    progress: bool | None = None,
) -> Path:
    """Train a tokenizer on ``texts``, build a seeded tiny Llama, save both to ``out_dir``.

    ``out_dir`` must not exist unless ``overwrite=True`` (then it is replaced only once the new
    model is complete). ``progress`` prints one line per stage to stderr (default: when stderr
    is a terminal). Returns ``out_dir`` as an absolute ``Path``.
    """
    config = config or TinyModelConfig()
    out = Path(out_dir).expanduser().absolute()
    if out.exists() and not overwrite:
        raise FileExistsError(
            f"{out} already exists; pass overwrite=True to replace it or choose another out_dir"
        )
    show = sys.stderr.isatty() if progress is None else progress
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        if show:
            print(
                f"[tiny-model {time.perf_counter() - t0:5.1f}s] {msg}", file=sys.stderr, flush=True
            )

    with atomic_dir(out) as staging:  # an old out_dir is replaced only once this is complete
        log(f"training byte-level BPE tokenizer (target vocab {config.vocab_size})")
        tokenizer = train_tokenizer(texts, config)
        log(f"tokenizer has {len(tokenizer)} tokens; building Llama {_shape(config)}")
        model = _build_model(tokenizer, config)
        tokenizer.save_pretrained(staging)
        _portable_tokenizer_config(staging / "tokenizer_config.json")
        model.save_pretrained(staging)
        model.generation_config.save_pretrained(staging)
        params = sum(p.numel() for p in model.parameters())
    log(f"saved {params:,} parameters to {out}")
    return out


def train_tokenizer(texts: Iterable[str], config: TinyModelConfig | None = None):
    """The byte-level BPE tokenizer alone, as a ``PreTrainedTokenizerFast`` with the template."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    config = config or TinyModelConfig()
    bpe = Tokenizer(models.BPE())
    # No normaliser: any normalisation (NFC, lowercasing) would break decode(encode(x)) == x.
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=config.vocab_size - len(TAG_TOKENS),
        min_frequency=config.min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    count = [0]
    bpe.train_from_iterator(_without_added_tokens(texts, count), trainer=trainer)
    if count[0] == 0:
        raise ConfigError("build_tiny_model got no text: pass a non-empty iterable of strings")
    bpe.add_tokens([AddedToken(t, special=False, normalized=False) for t in TAG_TOKENS])
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        extra_special_tokens=[IM_START],
        model_max_length=config.max_position_embeddings,
        clean_up_tokenization_spaces=False,
        chat_template=CHATML_TEMPLATE,
    )


_ADDED_PATTERN = re.compile("|".join(re.escape(t) for t in SPECIAL_TOKENS + TAG_TOKENS))


def _without_added_tokens(texts: Iterable[str], count: list[int]) -> Iterator[str]:
    """Split each text around special and tag tokens: they are atomic, BPE must not learn them."""
    for text in texts:
        if not isinstance(text, str):
            raise ConfigError(f"build_tiny_model texts must be strings, got {type(text).__name__}")
        count[0] += 1
        for piece in _ADDED_PATTERN.split(text):
            if piece:
                yield piece


def _shape(config: TinyModelConfig) -> str:
    return (
        f"{config.num_layers}x{config.hidden_size} (heads {config.num_heads}/{config.num_kv_heads},"
        f" mlp {config.intermediate_size})"
    )


def _build_model(tokenizer, config: TinyModelConfig):
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    eos_id = tokenizer.convert_tokens_to_ids(IM_END)
    pad_id = tokenizer.convert_tokens_to_ids(ENDOFTEXT)
    llama = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_kv_heads,
        max_position_embeddings=config.max_position_embeddings,
        tie_word_embeddings=config.tie_word_embeddings,
        initializer_range=config.initializer_range,
        bos_token_id=pad_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
    )
    # fork_rng: seed the init without disturbing the caller's global torch RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = LlamaForCausalLM(llama)
    model = model.to(getattr(torch, config.dtype)).eval()
    model.generation_config = GenerationConfig(
        eos_token_id=[eos_id, pad_id], pad_token_id=pad_id, bos_token_id=pad_id
    )
    return model


def _portable_tokenizer_config(path: Path) -> None:
    """Name the tokenizer class and extra tokens the way transformers 4.x and 5.x both read
    (vLLM may run with 4.x): 5.x writes its internal ``TokenizersBackend`` class name."""
    settings = json.loads(path.read_text(encoding="utf-8"))
    settings["tokenizer_class"] = "PreTrainedTokenizerFast"
    extra = settings.pop("extra_special_tokens", None)
    if extra:
        settings["additional_special_tokens"] = extra
    path.write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n", encoding="utf-8")
