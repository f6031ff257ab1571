"""Every shipped config in configs/ is a valid TrainConfig whose sections the components accept."""

from __future__ import annotations

from pathlib import Path

import pytest

from creditgym.config import from_dict, load_yaml
from creditgym.credit.registry import make_config
from creditgym.envs.factory import check_env_kwargs, resolve_env
from creditgym.errors import ConfigError
from creditgym.trainers.config import TrainConfig

CONFIGS = sorted(Path(__file__).resolve().parents[2].joinpath("configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_is_valid(path):
    cfg = load_yaml(TrainConfig, path)
    resolve_env(cfg.env.id)  # each names its environment; its options are the environment's
    check_env_kwargs(cfg.env.id, {**cfg.env.kwargs, **cfg.eval.env_kwargs})
    assert cfg.env.kwargs.get("config", cfg.env.kwargs).get("max_turns", 8) >= 2
    make_config(cfg.credit)  # raises on an unknown estimator or option


def test_real_model_config_uses_vllm_and_searchr1_data():
    cfg = load_yaml(TrainConfig, Path(CONFIGS[0]).with_name("qwen2.5-searchr1.yaml"))
    assert cfg.rollout.backend == "vllm" and cfg.model.path and cfg.env.kwargs["tasks_path"]
    assert cfg.env.kwargs["retriever"]["backend"] == "http" and cfg.policy.kl_coef > 0
    assert cfg.eval.env_kwargs == {"split": "test"}


@pytest.mark.parametrize("name", ["calculator.yaml", "keydoor.yaml"])
def test_environment_configs_hold_tasks_out_by_id(name):
    cfg = load_yaml(TrainConfig, Path(CONFIGS[0]).with_name(name))
    assert not cfg.eval.env_kwargs and 0 < cfg.eval.heldout_fraction < 1
    assert cfg.model.path is None and cfg.sft.steps > 0  # trained from scratch


def test_unknown_rollout_backend_is_rejected(tmp_path):
    # rollout.backend is a name checked against the backend registry, with the choices listed
    from creditgym.trainers.config import check_train_config

    cfg = from_dict(TrainConfig, {"rollout": {"backend": "sglang"}, "run_dir": str(tmp_path)})
    with pytest.raises(ConfigError, match=r"rollout.backend='sglang': unknown backend; choose "
                                          r"one of transformers, vllm \(registered: "):
        check_train_config(cfg)


def test_a_config_from_before_env_names_any_environment_says_where_keys_went(tmp_path, capsys):
    from creditgym.cli import main

    old = tmp_path / "old.yaml"
    old.write_text("run_dir: %s\nworld: {seed: 0}\nenv: {top_k: 1, max_turns: 4}\n"
                   "sft: {demo_worlds: 12, skip_search_prob: 0.5, lm_perfect_expert: true}\n"
                   % (tmp_path / "run"))
    assert main(["train", "--config", str(old)]) == 2
    err = capsys.readouterr().err
    for moved in ("world -> env.kwargs.world", "eval.env_kwargs: {split: test}",
                  "env.top_k -> env.kwargs.top_k", "env.max_turns -> env.kwargs.max_turns",
                  "sft.demo_worlds -> sft.demonstrator.worlds",
                  "sft.skip_search_prob -> sft.demonstrator.skip_search_prob",
                  "sft.lm_perfect_expert -> sft.lm_demonstrator: {perfect: true}"):
        assert moved in err
    assert not (tmp_path / "run").exists()
