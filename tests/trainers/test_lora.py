"""LoRA (peft) in the trainer, and `creditgym export-model`: only adapters train and are saved;
the exported folder is a plain transformers model with the merged policy's log-probs."""

from __future__ import annotations

import json

import pytest
import torch
import torch.distributed.checkpoint as dcp

from creditgym.cli import main
from creditgym.errors import ConfigError
from creditgym.trainers.lora import LoraSettings, apply_lora, plain_model, plain_state_dict
from tests.trainers.helpers import SMALL, start_from, tiny_model

pytestmark = pytest.mark.slow  # end-to-end runs or subprocesses: scheduled first

pytest.importorskip("peft")

BASE = ["train", "--config", "configs/default.yaml", *SMALL, "--set", "eval.before=false"]


def _logprobs(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.log_softmax(model(input_ids=ids).logits.float(), -1)


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, warm_model):
    """From the session's warm start: one action SFT step under LoRA (its merged ``sft-model/``),
    then two RL iterations."""
    run = tmp_path_factory.mktemp("lora") / "run"
    assert main([*BASE, *start_from(warm_model), "--set", "sft.steps=1", "--set", f"run_dir={run}",
                 "--set", "rl.iterations=2", "--set", "model.lora.r=4",
                 "--set", "model.lora.alpha=8",
                 "--set", "sft.lr=0.01", "--set", "rl.lr=0.01"]) == 0
    return run


def test_a_lora_run_checkpoints_the_adapters_and_optimiser_state_only(lora_run, warm_model):
    saved = dcp.FileSystemReader(str(lora_run / "checkpoints" / "step-000002")).read_metadata()
    keys = list(saved.state_dict_metadata)
    model_keys = [k for k in keys if k.startswith("model.")]
    optim_keys = [k for k in keys if k.startswith("optimizer.state.")]
    # adapters only; the tiny model's output head is its (frozen) embedding under a second
    # name, which DCP keeps as an alias of the one tensor
    assert model_keys and all("lora_A" in k or "lora_B" in k or k.endswith("lm_head.weight")
                              for k in model_keys)
    layers = json.loads((warm_model / "config.json").read_text())["num_hidden_layers"]
    assert len(model_keys) == 1 + layers * 7 * 2  # 7 adapted linears per layer, A and B each
    assert optim_keys and all("lora_" in k for k in optim_keys)
    assert (lora_run / "sft-model" / "config.json").is_file()
    assert not (lora_run / "sft-model" / "adapter_config.json").exists()  # merged, plain


def test_export_gives_the_merged_policy_and_only_adapted_weights_changed(lora_run, warm_model,
                                                                          tmp_path):
    from transformers import AutoModelForCausalLM

    from creditgym.trainers.dist_checkpoint import load_model_weights

    out = tmp_path / "exported"
    assert main(["export-model", str(lora_run), "--out", str(out)]) == 0
    assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()
    meta = json.loads((out / "creditgym-export.json").read_text())
    assert meta["step"] == 2 and meta["lora"] is True
    exported = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    base = AutoModelForCausalLM.from_pretrained(str(warm_model)).eval()
    # the trained policy, rebuilt as the trainer holds it: base + adapters from the checkpoint
    policy = apply_lora(AutoModelForCausalLM.from_pretrained(str(warm_model)),
                        LoraSettings(r=4, alpha=8.0), seed=0)
    load_model_weights(lora_run / "checkpoints", policy)
    ids = torch.randint(3, exported.config.vocab_size, (3, 17), generator=torch.Generator()
                        .manual_seed(0))
    got, want = _logprobs(exported, ids), _logprobs(policy.eval(), ids)
    assert float((got - want).abs().max()) < 1e-4
    assert float((got - _logprobs(base, ids)).abs().max()) > 1e-3  # the adapters did train
    adapted = {n.replace(".base_layer", "") for n, _ in policy.get_base_model().named_parameters()
               if ".base_layer." in n}
    changed = {n for n, p in exported.named_parameters()
               if not torch.equal(p, dict(base.named_parameters())[n])}
    assert changed and changed <= adapted  # embeddings, norms, head: exactly the base's


def test_export_refuses_outputs_that_would_destroy_inputs(lora_run, tmp_path, capsys):
    assert main(["export-model", str(lora_run), "--out", str(lora_run)]) == 2
    assert "holds the input" in capsys.readouterr().err
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    assert main(["export-model", str(lora_run), "--out", str(busy)]) == 2
    assert "--force" in capsys.readouterr().err and (busy / "keep.txt").read_text() == "mine"
    assert main(["export-model", str(tmp_path / "nope"), "--out", str(tmp_path / "x")]) == 2
    assert "not a `creditgym train` run folder" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_plain_state_dict_merges_adapters_under_the_base_names():
    model = apply_lora(tiny_model(0), LoraSettings(r=2, alpha=4.0), seed=0)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0.0, 0.1)
    plain = tiny_model(5)
    assert plain.load_state_dict(plain_state_dict(model)).missing_keys == []
    ids = torch.randint(3, 40, (2, 9), generator=torch.Generator().manual_seed(1))
    want = _logprobs(model, ids)
    assert float((_logprobs(plain, ids) - want).abs().max()) < 1e-5
    assert float((_logprobs(plain_model(model), ids) - want).abs().max()) < 1e-5
    assert float((_logprobs(tiny_model(0), ids) - want).abs().max()) > 1e-3
    assert "lora_A" in "".join(n for n, _ in model.named_parameters())  # model left as it was


def test_adapter_init_is_seeded_and_leaves_the_global_stream_alone():
    torch.manual_seed(123)
    a = apply_lora(tiny_model(0), LoraSettings(r=2), seed=7)
    after_a = torch.rand(1)
    torch.manual_seed(123)
    b = apply_lora(tiny_model(0), LoraSettings(r=2), seed=7)
    assert torch.equal(torch.rand(1), after_a)
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(p, q), n


@pytest.mark.parametrize("setting, message", [
    ("model.lora.r=-1", "model.lora.r=-1"),
    ("model.lora.dropout=1.5", "model.lora.dropout=1.5"),
    ("model.lora.target_modules=[]", "target_modules is empty"),
])
def test_bad_lora_settings_fail_before_the_run_folder(tmp_path, capsys, setting, message):
    run = tmp_path / "run"
    extra = ["--set", "model.lora.r=4"] if not setting.startswith("model.lora.r=") else []
    assert main([*BASE, "--set", f"run_dir={run}", *extra, "--set", setting]) == 2
    assert message in capsys.readouterr().err and not run.exists()


def test_unknown_target_modules_name_the_option():
    with pytest.raises(ConfigError, match="model.lora.target_modules"):
        apply_lora(tiny_model(0), LoraSettings(r=2, target_modules=["no_such_proj"]), seed=0)
