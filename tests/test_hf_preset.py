"""`model=hf`: the model from a Hugging Face folder's config.json (conf/model/hf.yaml,
runs/compose.folder_model, models/transformer_record.from_folder). transformers saves small
GPT-2 and LLaMA folders here, nothing is downloaded; logits are compared in float32."""

from __future__ import annotations

import json
import math

import pytest
import torch

from bigtrain.config import ConfigError, as_dict
from bigtrain.models import build_model
from bigtrain.models.hf import load_into, model_keys
from bigtrain.models.transformer_record import FOLDER_KEYS
from bigtrain.runs.export import main as export_main
from conftest import bigtrain_cmd, make_cfg
from test_hf import LM, TOL, _checkpoint, gpt2, llama, max_diff

transformers = pytest.importorskip("transformers")


def default_gpt2(folder):
    """GPT2Config's defaults (gelu_new, epsilon 1e-5, 1024 positions, tied, FFN 4 x width) with
    small sizes (layers, width, heads, vocabulary) so that the test is fast; the initializer's
    scale is larger (bigtrain does not read it) so that logits differ visibly."""
    config = transformers.GPT2Config(
        n_layer=2,
        n_embd=64,
        n_head=4,
        vocab_size=256,
        initializer_range=0.1,
        bos_token_id=None,
        eos_token_id=None,
    )
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config).eval()
    model.save_pretrained(folder)
    return model


def default_llama(folder):
    """LlamaConfig's defaults (epsilon 1e-6, RoPE base 10000, 2048 positions, untied, no biases,
    as many KV heads as heads) with small sizes, as default_gpt2."""
    config = transformers.LlamaConfig(
        num_hidden_layers=2, hidden_size=64, num_attention_heads=4, intermediate_size=172, vocab_size=256,
        initializer_range=0.1, bos_token_id=None, eos_token_id=None,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    model.save_pretrained(folder)
    return model


FOLDERS = {
    "gpt2-default": (default_gpt2, dict(n_layers=2, d_model=64, n_heads=4, n_kv_heads=4, d_ff=256,
                     vocab_size=256, max_seq_len=1024, norm="layernorm", mlp="gelu_tanh", positions="learned",
                     tie_embeddings=True, bias=True, norm_eps=1e-5)),
    "llama-default": (default_llama, dict(n_layers=2, d_model=64, n_heads=4, n_kv_heads=4, d_ff=172,
                      vocab_size=256, max_seq_len=2048, norm="rmsnorm", mlp="swiglu", positions="rope",
                      tie_embeddings=False, bias=False, norm_eps=1e-6, rope_theta=10000.0)),
    # grouped-query attention, another RoPE base, tied embeddings
    "llama-gqa": (lambda f: llama(f, rope_theta=500000.0, tie_word_embeddings=True),
                  dict(n_layers=2, n_heads=4, n_kv_heads=2, d_ff=192, max_seq_len=512, norm_eps=1e-5,
                       rope_theta=500000.0, tie_embeddings=True)),
    # three layers, exact GELU, its own FFN width and epsilon, untied
    "gpt2-3-layers": (lambda f: gpt2(f, activation="gelu", n_layer=3, n_inner=160, layer_norm_epsilon=1e-6,
                                     tie_word_embeddings=False),
                      dict(n_layers=3, d_ff=160, mlp="gelu", norm_eps=1e-6, tie_embeddings=False, max_seq_len=256)),
}  # fmt: skip
# The settings that fix the function, read back from an export's config.json.
SAME_KEYS = {
    "gpt2": ("n_layer", "n_embd", "n_head", "n_positions", "activation_function", "layer_norm_epsilon",
             "tie_word_embeddings", "vocab_size"),
    "llama": ("num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads",
              "intermediate_size", "max_position_embeddings", "rms_norm_eps", "tie_word_embeddings", "vocab_size"),
}  # fmt: skip


def _config_json(folder) -> dict:
    config = json.loads((folder / "config.json").read_text())
    if config["model_type"] == "gpt2":
        config["n_inner"] = config.get("n_inner") or 4 * config["n_embd"]
        config["activation_function"] = {"gelu_new": "gelu_pytorch_tanh"}.get(
            config["activation_function"], config["activation_function"]
        )  # the same function (transformers' two names of the tanh approximation)
    else:
        config["rope_theta"] = (config.get("rope_parameters") or {}).get(
            "rope_theta", config.get("rope_theta")
        )
    return config


@pytest.mark.parametrize("name", sorted(FOLDERS))
def test_model_hf_takes_every_key_from_the_folder(tmp_path, name):
    """model=hf and the folder, no other model override: the same logits as transformers', and
    an export that transformers loads with the same logits and config.json settings."""
    make, expected = FOLDERS[name]
    theirs = make(tmp_path / "hf")
    cfg = make_cfg(["model=hf", f"model.init_from={tmp_path / 'hf'}", *LM])
    model = as_dict(cfg)["model"]
    assert {k: model[k] for k in expected} == expected
    ours = build_model(cfg.model, (32,), cfg.model.vocab_size).eval()
    assert "parameters from" in load_into(ours, cfg.model.init_from)
    diff = max_diff(ours, theirs)
    print(f"model=hf {name}: max abs logit difference {diff:.2e}")
    assert diff <= TOL

    _checkpoint(tmp_path / "best.ckpt", ours, model)
    export_main(
        [str(tmp_path / "best.ckpt"), str(tmp_path / "out"), "--format", "hf"], prog="bigtrain export"
    )
    exported = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    assert type(exported).__name__ == type(theirs).__name__
    diff = max_diff(ours, exported)
    print(f"model=hf {name} exported: max abs logit difference {diff:.2e}")
    assert diff <= TOL
    before, after = _config_json(tmp_path / "hf"), _config_json(tmp_path / "out")
    kind = before["model_type"]
    keys = (*SAME_KEYS[kind], "n_inner" if kind == "gpt2" else "rope_theta")
    assert {k: after[k] for k in keys} == {k: before[k] for k in keys}
    # ... and the export is a folder model=hf reads as the same model
    again = make_cfg(["model=hf", f"model.init_from={tmp_path / 'out'}", *LM])
    assert as_dict(again)["model"] == {**model, "init_from": str(tmp_path / "out")}


def test_model_hf_records_what_it_took_from_the_folder(tmp_path):
    """The values come in as overrides (so a resume replays them); a key typed that agrees with
    the folder, or that the folder leaves open (LLaMA's context), stays as typed."""
    from bigtrain.runs.compose import compose_run

    default_llama(tmp_path / "hf")
    folder = f"model.init_from={tmp_path / 'hf'}"
    cfg, added = compose_run(
        ["model=hf", folder, "model.n_layers=2", "model.max_seq_len=128"], with_hydra=True
    )
    assert "model.n_layers=2" not in added and "model.norm_eps=1e-06" in added
    assert "model.max_seq_len=128" not in added and cfg.model.max_seq_len == 128
    assert "data.seq_len=128" in added  # the window fits the context chosen
    assert [o for o in cfg.hydra.overrides.task if o.startswith("model.")][-1] == "model.rope_theta=10000.0"
    replayed, again = compose_run(list(cfg.hydra.overrides.task))
    assert again == [] and replayed.model == cfg.model


def _lines(overrides: list[str]) -> list[str]:
    with pytest.raises(ConfigError) as e:
        make_cfg([*overrides, *LM])
    return e.value.lines


def test_model_hf_typed_keys_that_disagree_give_one_line_each(tmp_path):
    gpt2(tmp_path / "hf", n_layer=2)
    folder = str(tmp_path / "hf")
    lines = _lines(["model=hf", f"model.init_from={folder}", "model.n_layers=4", "model.mlp=gelu"])
    assert lines == [
        f"model.n_layers=4 disagrees with model.init_from={folder}: its config.json n_layer=2 needs "
        "model.n_layers=2; leave model.n_layers out to take the folder's",
        f"model.mlp=gelu disagrees with model.init_from={folder}: its config.json activation_function=gelu_new "
        "needs model.mlp=gelu_tanh; leave model.mlp out to take the folder's",
    ]
    assert _lines(["model=hf"]) == [
        "model=hf takes the model's 14 shape keys from a Hugging Face folder's config.json: "
        "add model.init_from=FOLDER"
    ]
    (line,) = _lines(["model=hf", f"model.init_from={tmp_path / 'missing'}"])
    assert line.startswith(f"model.init_from={tmp_path / 'missing'} does not exist"), line
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    (tmp_path / "hf" / "config.json").write_text(json.dumps({**config, "activation_function": "relu"}))
    (line,) = _lines(["model=hf", f"model.init_from={folder}"])
    assert (
        line
        == f"model.init_from={folder}: config.json activation_function=relu: bigtrain's GPT-2 MLP is gelu or gelu_new (gelu_tanh)"
    )


def test_model_hf_typed_key_stops_the_command_before_its_run_directory(tmp_path):
    default_gpt2(tmp_path / "hf")
    out = bigtrain_cmd(
        "model=hf",
        f"model.init_from={tmp_path / 'hf'}",
        "model.n_layers=4",
        "hydra.run.dir=run",
        cwd=tmp_path,
    )
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        f"bigtrain: error: model.n_layers=4 disagrees with model.init_from={tmp_path / 'hf'}: its config.json "
        "n_layer=2 needs model.n_layers=2; leave model.n_layers out to take the folder's"
    ]
    assert not (tmp_path / "run").exists()


def test_model_hf_trains_from_a_default_folder(tmp_path):
    """The command line, default callbacks: two steps from a default-config LLaMA folder, what
    the folder gave saved among the run's overrides (a resume replays them:
    test_model_hf_records_what_it_took_from_the_folder)."""
    default_llama(tmp_path / "hf")
    args = ["model=hf", f"model.init_from={tmp_path / 'hf'}", "data=stdlib_text", "data.max_bytes=60000"]
    args += ["data.seq_len=32", "data.batch_size=8", "trainer.max_steps=2", "hydra.run.dir=run"]
    out = bigtrain_cmd(*args, "trainer.enable_progress_bar=false", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    first = out.stdout.splitlines()[0]
    assert first.startswith(
        "bigtrain: a language model: added metrics=lm model.n_layers=2 model.d_model=64 "
    ), first
    assert f"init_from: {_params(tmp_path / 'hf'):,} parameters from" in out.stdout
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["status"] == "completed" and results["global_step"] == 2
    saved = (tmp_path / "run" / ".hydra" / "overrides.yaml").read_text()
    assert "model.norm_eps=1e-06" in saved and "model.d_ff=172" in saved


def _params(folder) -> int:
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), framework="numpy") as f:
        return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())  # noqa: SIM118


def test_model_hf_preset_holds_every_key_of_the_schema():
    import dataclasses
    from importlib import resources

    import yaml

    from bigtrain.config.schema_models import TransformerConfig

    preset = yaml.safe_load(resources.files("bigtrain.conf").joinpath("model", "hf.yaml").read_text())
    assert set(preset) == {f.name for f in dataclasses.fields(TransformerConfig)}
    assert set(FOLDER_KEYS) == set(preset) - {"family", "dropout", "init_from"}
    for kind in ("gpt2", "llama"):  # each layout gives every one of them
        assert set(model_keys({"model_type": kind, "vocab_size": 256})) == set(FOLDER_KEYS)
