"""Agents: policy backends (transformers, OpenAI-compatible HTTP, vLLM), multi-turn rollout, prompts."""
