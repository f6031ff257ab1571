"""Every shipped config in configs/ is a valid TrainConfig whose sections the components accept."""

from __future__ import annotations

from pathlib import Path

import pytest

from creditgym.config import from_dict, load_yaml
from creditgym.credit.registry import make_config
from creditgym.envs.search_env import SearchEnvConfig
from creditgym.errors import ConfigError
from creditgym.trainers.config import TrainConfig

CONFIGS = sorted(Path(__file__).resolve().parents[2].joinpath("configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_is_valid(path):
    cfg = load_yaml(TrainConfig, path)
    env = from_dict(SearchEnvConfig, {**cfg.env, "world": cfg.world}, where="env")
    assert env.max_turns >= 2 and env.top_k >= 1
    make_config(cfg.credit)  # raises on an unknown estimator or option


def test_real_model_config_uses_vllm_and_searchr1_data():
    cfg = load_yaml(TrainConfig, Path(CONFIGS[0]).with_name("qwen2.5-searchr1.yaml"))
    assert cfg.rollout.backend == "vllm" and cfg.model.path and cfg.env["tasks_path"]
    assert cfg.env["retriever"]["backend"] == "http" and cfg.policy.kl_coef > 0


def test_unknown_rollout_backend_is_rejected(tmp_path):
    # rollout.backend is a name checked against the backend registry, with the choices listed
    from creditgym.trainers.config import check_train_config

    cfg = from_dict(TrainConfig, {"rollout": {"backend": "sglang"}, "run_dir": str(tmp_path)})
    with pytest.raises(ConfigError, match=r"rollout.backend='sglang': unknown backend; choose "
                                          r"one of transformers, vllm \(registered: "):
        check_train_config(cfg)
