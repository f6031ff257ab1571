"""benchmarks/learning.py plans a fair comparison before any run: every registered estimator,
one shared warm start, equal samples per method, the config's own credit options kept for the
method it names; bad settings fail before anything is made."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from creditgym.credit.registry import ESTIMATORS
from creditgym.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def learning():
    spec = importlib.util.spec_from_file_location("learning_benchmark",
                                                  ROOT / "benchmarks" / "learning.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def plan(learning, tmp_path, *argv):
    args = learning.parse_args(["--config", str(ROOT / "configs" / "keydoor.yaml"),
                                "--out", str(tmp_path / "out"), *argv])
    return learning.plan(args, tmp_path / "out")["keydoor"]


def test_every_estimator_from_one_warm_start_with_equal_samples(learning, tmp_path):
    s = plan(learning, tmp_path, "--set-option", "igpo.gamma=0.9", "--device", "cpu")
    assert s["methods"] == list(ESTIMATORS)
    warm = s["warm_cfg"]
    assert warm["run_dir"] == str(tmp_path / "out" / "keydoor" / "warm-start")
    assert warm["sft"]["steps"] > 0 and warm["model"].get("path") is None
    sizes = set()
    for method, by_seed in s["runs"].items():
        assert sorted(by_seed) == [0, 1, 2, 3, 4]  # the cpu preset's seeds
        for seed, cfg in by_seed.items():
            assert cfg["model"]["path"] == warm["run_dir"] + "/sft-model"
            assert cfg["model"]["device"] == "cpu" and cfg["threads"] == 1
            assert cfg["sft"]["steps"] == 0 and cfg["sft"]["lm_steps"] == 0
            assert cfg["seed"] == seed and cfg["credit"]["name"] == method
            assert cfg["run_dir"].endswith(f"keydoor/seed{seed}/{method}")
            rl = cfg["rl"]
            sizes.add((rl["iterations"], rl["tasks_per_iteration"], rl["group_size"]))
    assert sizes == {(15, 8, 8)}  # configs/keydoor.yaml as written, for every method
    # the config names gigpo: its options stay; the others run with defaults plus --set-option
    assert s["credits"]["gigpo"] == {"name": "gigpo", "gamma": 0.95, "norm": "std"}
    assert s["credits"]["igpo"] == {"name": "igpo", "gamma": 0.9}
    assert s["credits"]["grpo"] == {"name": "grpo"}


def test_gpu_preset_and_overrides(learning, tmp_path):
    import torch

    args = ("--preset", "gpu", "--methods", "grpo,gigpo", "--set", "rl.group_size=4")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            plan(learning, tmp_path, *args)
    s = plan(learning, tmp_path, *args, "--device", "cpu")
    cfg = s["runs"]["grpo"][9]  # seeds 0-9
    assert (cfg["rl"]["iterations"], cfg["rl"]["tasks_per_iteration"], cfg["rl"]["group_size"],
            cfg["eval"]["episodes"]) == (30, 16, 4, 256)
    assert plan(learning, tmp_path, "--methods", "grpo", "--iterations", "3")[
        "runs"]["grpo"][0]["rl"]["iterations"] == 3


@pytest.mark.parametrize("argv, message", [
    (("--methods", "grpo,nope"), "unknown estimator 'nope'"),
    (("--seeds", "0,0"), "distinct seeds"),
    (("--set", "rl.group_size=0"), "rl.group_size=0"),
    (("--set-option", "gigpo.gama=1"), "gama"),
])
def test_bad_settings_fail_before_any_run(learning, tmp_path, argv, message):
    with pytest.raises(ConfigError, match=message):
        plan(learning, tmp_path, *argv)
    assert not (tmp_path / "out").exists()


def test_a_full_output_folder_is_refused(learning, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "results.json").write_text("[]")
    with pytest.raises(Exception, match="--force"):
        learning.main(["--out", str(tmp_path / "out"), "--methods", "grpo"])
    assert (tmp_path / "out" / "results.json").read_text() == "[]"


def test_a_warm_start_made_elsewhere_is_shared_as_it_is(learning, tmp_path, tiny_model_dir):
    s = plan(learning, tmp_path, "--set", f"model.path={tiny_model_dir}",
             "--set", "sft.steps=0", "--set", "sft.lm_steps=0")
    # no SFT in the warm-start run, so there is no sft-model: every method starts from the
    # model it loads (a first version pointed them at a folder that was never written)
    assert learning.warm_model_dir(s["warm_cfg"]) == Path(tiny_model_dir)
    assert {cfg["model"]["path"] for r in s["runs"].values() for cfg in r.values()} == \
        {str(tiny_model_dir)}
    built = plan(learning, tmp_path, "--set", "sft.steps=0", "--set", "sft.lm_steps=0")
    assert learning.warm_model_dir(built["warm_cfg"]) == \
        Path(built["warm_cfg"]["run_dir"]) / "base-model"  # the tiny model it builds
