"""Prompt rendering and token-in/token-out observation deltas over a tokenizer's chat template.

The rollout never re-tokenises text it already holds as ids. The prompt is rendered once with
the chat template (generation prompt included); every generated id is kept as generated; each
observation is appended as the token ids of the template's *delta* for one more message: what the
template adds to close the assistant turn, open the observation message, and open the next
assistant turn. The delta is computed against a fixed stand-in conversation, so templates that
rewrite earlier turns (Qwen3 drops old ``<think>`` blocks) still give the right delta.

``observation_mode="inline"`` is Search-R1's layout instead: no chat turns after the prompt; the
observation text is tokenised and appended to the running assistant turn.

``first_mismatch`` is the debug check: it renders the whole conversation afresh and reports the
first position where the running ids differ (a mismatch there is normal for history-rewriting
templates, and a bug otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Sequence

from creditgym.errors import CreditGymError

_REPLY = "zq9reply"
_STAND_IN = [{"role": "user", "content": "zq9ask"}, {"role": "assistant", "content": _REPLY}]


class ChatTemplateError(CreditGymError, ValueError):
    """The tokenizer's chat template cannot be used for token-in/token-out rollouts."""


@dataclass(frozen=True)
class Mismatch:
    """Where running ids and a fresh render of the conversation first differ."""

    position: int
    running: list[int]
    fresh: list[int]


class ChatRenderer:
    """Renders prompts and observation deltas for one tokenizer (see the module docstring)."""

    def __init__(
        self,
        tokenizer: Any,
        *,
        observation_role: str = "user",
        observation_mode: Literal["message", "inline"] = "message",
    ) -> None:
        if observation_mode == "message" and not getattr(tokenizer, "chat_template", None):
            raise ChatTemplateError(
                f"tokenizer {getattr(tokenizer, 'name_or_path', tokenizer)!r} has no chat template; "
                "set one (tokenizer.chat_template = ...) or use observation_mode='inline'"
            )
        if observation_mode not in ("message", "inline"):
            raise ChatTemplateError(f"observation_mode must be 'message' or 'inline', got {observation_mode!r}")
        self.tokenizer = tokenizer
        self.observation_role = observation_role
        self.observation_mode = observation_mode
        self.end_of_turn_ids = self._end_of_turn_ids()
        self._closing, self._opening = self._stand_in_delta() if observation_mode == "message" else ("", "")

    # ---------------------------------------------------------------- rendering

    def render(self, messages: Sequence[dict], *, tools: list[dict] | None = None,
               add_generation_prompt: bool = False) -> str:
        kwargs = {"tools": tools} if tools else {}
        return self.tokenizer.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=add_generation_prompt, **kwargs
        )

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False,
                                     clean_up_tokenization_spaces=False)

    def prompt_ids(self, messages: Sequence[dict], *, tools: list[dict] | None = None) -> list[int]:
        """Token ids of the conversation so far plus the assistant generation prompt."""
        return self.encode(self.render(messages, tools=tools, add_generation_prompt=True))

    def observation_ids(self, observation: str, action_ids: Sequence[int]) -> list[int]:
        """Ids to append after a generated action so the next generation sees ``observation``."""
        if self.observation_mode == "inline":
            return self.encode(observation)
        closing = self._closing
        if action_ids and action_ids[-1] in self.end_of_turn_ids:
            # The action already ended its turn; only what follows the end token is missing.
            eot = self.decode([action_ids[-1]])
            closing = closing[len(eot):] if closing.startswith(eot) else closing
        return self.encode(closing + self._opening.format_map({"observation": observation}))

    def assistant_text(self, action_ids: Sequence[int]) -> str:
        """The assistant message content of an action (an ending end-of-turn token removed)."""
        ids = list(action_ids)
        if ids and ids[-1] in self.end_of_turn_ids:
            ids = ids[:-1]
        return self.decode(ids)

    def first_mismatch(self, running_ids: Sequence[int], messages: Sequence[dict], *,
                       tools: list[dict] | None = None) -> Mismatch | None:
        """Compare running ids with a fresh render of ``messages`` (ending on an observation)."""
        if self.observation_mode == "inline":
            return None
        fresh = self.prompt_ids(messages, tools=tools)
        running = list(running_ids)
        for i, (a, b) in enumerate(zip(running, fresh)):
            if a != b:
                return Mismatch(i, running[i : i + 8], fresh[i : i + 8])
        if len(running) != len(fresh):
            n = min(len(running), len(fresh))
            return Mismatch(n, running[n : n + 8], fresh[n : n + 8])
        return None

    # ---------------------------------------------------------------- internals

    def _end_of_turn_ids(self) -> set[int]:
        ids = set()
        for attr in ("eos_token_id",):
            value = getattr(self.tokenizer, attr, None)
            if isinstance(value, int):
                ids.add(value)
        for token in ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>"):
            tid = self.tokenizer.convert_tokens_to_ids(token)
            if isinstance(tid, int) and tid != getattr(self.tokenizer, "unk_token_id", None) and tid >= 0:
                ids.add(tid)
        return ids

    def _stand_in_delta(self) -> tuple[str, str]:
        """(text closing an assistant turn, template of the observation message + next prompt)."""
        marker = "\x00OBSERVATION\x00"
        base = self.render(_STAND_IN)
        full = self.render(
            [*_STAND_IN, {"role": self.observation_role, "content": marker}], add_generation_prompt=True
        )
        if not full.startswith(base):
            raise ChatTemplateError(
                "the chat template renders an earlier conversation differently once a message is "
                "added, so observation deltas cannot be computed; use observation_mode='inline'"
            )
        end = base.rfind(_REPLY)
        if end < 0 or marker not in full:
            raise ChatTemplateError("the chat template drops message contents; cannot find them")
        closing = base[end + len(_REPLY) :]
        opening = full[len(base) :].replace("{", "{{").replace("}", "}}").replace(marker, "{observation}")
        return closing, opening
