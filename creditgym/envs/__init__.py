"""Environments: the gymnasium contract, tools, the built-in world, task loaders, rewards and retrieval."""
