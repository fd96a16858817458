"""Hugging Face weights in and out (models/hf.py, `bigtrain export --format hf`), and the MLP's
GELU choices. transformers builds small random GPT-2 and LLaMA models here, nothing is
downloaded; logits are compared in float32."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch
import torch.nn.functional as F

import bigtrain
from bigtrain.config import ConfigError, as_dict
from bigtrain.config.schema_models import upgrade_saved_model
from bigtrain.data import build_datamodule
from bigtrain.models import build_model
from bigtrain.models.hf import load_into
from bigtrain.runs.export import main as export_main
from conftest import QUIET, bigtrain_cmd, make_cfg

transformers = pytest.importorskip("transformers")

LM = ["data=stdlib_text", "metrics=lm", "data.max_bytes=60000", "data.seq_len=32", "data.batch_size=8"]
TOL = 1e-5


def gpt2(folder, activation="gelu_new", **changes):
    """A random GPT2LMHeadModel of gpt/tiny's shape, saved in `folder`."""
    shape = dict(vocab_size=256, n_positions=256, n_embd=64, n_layer=2, n_head=4, initializer_range=0.1)
    config = transformers.GPT2Config(
        **{**shape, **changes}, activation_function=activation, bos_token_id=None, eos_token_id=None
    )
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config).eval()
    model.save_pretrained(folder)
    return model


def llama(folder, **changes):
    """A random LlamaForCausalLM of llama/tiny's shape (4 query heads share 2 KV heads)."""
    shape = dict(
        vocab_size=256, hidden_size=64, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, rms_norm_eps=1e-5, initializer_range=0.1,
    )  # fmt: skip
    config = transformers.LlamaConfig(**{**shape, **changes}, bos_token_id=None, eos_token_id=None)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    model.save_pretrained(folder)
    return model


TOKENS = torch.randint(0, 256, (2, 48), generator=torch.Generator().manual_seed(1))


def max_diff(ours, theirs) -> float:
    with torch.no_grad():
        a, b = ours(TOKENS), theirs(TOKENS).logits
    assert a.std() > 0.1, "logits too small for the comparison to mean anything"
    return (a - b).abs().max().item()


# --------------------------------------------------------------------------- in


@pytest.mark.parametrize(
    "preset, make, extra",
    [
        ("gpt/tiny", lambda f: gpt2(f, activation="gelu"), []),  # exact GELU: gpt/tiny as it is
        ("gpt/tiny", gpt2, ["model.mlp=gelu_tanh"]),  # GPT-2's own gelu_new
        ("llama/tiny", llama, []),
    ],
    ids=["gpt2-gelu", "gpt2-gelu_new", "llama-gqa"],
)
def test_hf_folder_loads_with_the_same_logits(tmp_path, preset, make, extra):
    theirs = make(tmp_path / "hf")
    cfg = make_cfg([f"model={preset}", *LM, *extra, f"model.init_from={tmp_path / 'hf'}"])
    ours = build_model(cfg.model, (32,), 256).eval()
    assert "parameters from" in load_into(ours, cfg.model.init_from)
    diff = max_diff(ours, theirs)
    print(f"{preset} {extra}: max abs logit difference {diff:.2e}")
    assert diff <= TOL


def test_bare_model_folder_and_sharded_files_load(tmp_path):
    """Names without the LM prefix (GPT2Model's) and weights split over several files."""
    from safetensors.torch import load_file, save_file

    theirs = gpt2(tmp_path / "hf", activation="gelu")
    whole = tmp_path / "hf" / "model.safetensors"
    bare = sorted((k.removeprefix("transformer."), v) for k, v in load_file(whole).items())
    whole.unlink()
    half = len(bare) // 2
    for i, part in enumerate((bare[:half], bare[half:])):
        save_file(dict(part), tmp_path / "hf" / f"model-0000{i + 1}-of-00002.safetensors")
    cfg = make_cfg(["model=gpt/tiny", *LM, f"model.init_from={tmp_path / 'hf'}"])
    ours = build_model(cfg.model, (32,), 256).eval()
    load_into(ours, cfg.model.init_from)
    assert max_diff(ours, theirs) <= TOL


# --------------------------------------------------------------------------- out


def _checkpoint(path, model, model_section: dict) -> None:
    """A checkpoint as a run saves one: the module's weights and the run's config."""
    weights = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": weights, "hyper_parameters": {"model": model_section}}, path)


@pytest.mark.parametrize("preset", ["gpt/tiny", "llama/tiny"])
def test_export_loads_in_transformers_with_the_same_logits(tmp_path, preset, capsys):
    cfg = make_cfg([f"model={preset}", *LM])
    torch.manual_seed(0)
    ours = build_model(cfg.model, (32,), 256).eval()
    with torch.no_grad():  # larger weights than the init, so that logits differ visibly
        for p in ours.parameters():
            p.mul_(3.0)
    _checkpoint(tmp_path / "best.ckpt", ours, as_dict(cfg)["model"])
    export_main([str(tmp_path / "best.ckpt"), str(tmp_path / "hf"), "--format", "hf"], prog="bigtrain export")
    assert "parameters as" in capsys.readouterr().out
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    expected = "GPT2LMHeadModel" if preset.startswith("gpt") else "LlamaForCausalLM"
    assert type(theirs).__name__ == expected
    diff = max_diff(ours, theirs)
    print(f"{preset} exported: max abs logit difference {diff:.2e}")
    assert diff <= TOL
    # ... and back in: the export is a folder bigtrain reads too
    again = build_model(cfg.model, (32,), 256).eval()
    load_into(again, tmp_path / "hf")
    torch.testing.assert_close(again(TOKENS), ours(TOKENS), rtol=0, atol=0)


def test_old_checkpoint_gelu_exports_as_the_tanh_approximation(tmp_path):
    """Before gelu_tanh existed, a saved `mlp: gelu` meant the tanh approximation."""
    cfg = make_cfg(["model=gpt/tiny", *LM, "model.mlp=gelu_tanh"])
    ours = build_model(cfg.model, (32,), 256).eval()
    old = {k: v for k, v in as_dict(cfg)["model"].items() if k != "init_from"} | {"mlp": "gelu"}
    assert upgrade_saved_model(old)["mlp"] == "gelu_tanh"
    assert upgrade_saved_model(as_dict(cfg)["model"] | {"mlp": "gelu"})["mlp"] == "gelu"  # a new one
    _checkpoint(tmp_path / "old.ckpt", ours, old)
    export_main([str(tmp_path / "old.ckpt"), str(tmp_path / "hf"), "--format", "hf"])
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["activation_function"] == "gelu_new"
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    diff = max_diff(ours, theirs)
    print(f"gpt/tiny gelu_tanh exported as gelu_new: max abs logit difference {diff:.2e}")
    assert diff <= TOL


# --------------------------------------------------------------------------- mistakes


def _one_line(overrides: list[str]) -> str:
    with pytest.raises(ConfigError) as e:
        make_cfg(["model=gpt/tiny", *LM, *overrides])
    assert len(e.value.lines) == 1, e.value.lines
    return e.value.lines[0]


def test_bad_folders_give_one_line_each(tmp_path):
    gpt2(tmp_path / "hf", activation="gelu", n_layer=3)
    (tmp_path / "empty").mkdir()
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text('{"model_type": "bert"}')
    (tmp_path / "nobin").mkdir()
    (tmp_path / "nobin" / "config.json").write_text((tmp_path / "hf" / "config.json").read_text())
    cases = {
        str(tmp_path / "missing"): "does not exist",
        str(tmp_path / "empty"): "has no config.json",
        str(tmp_path / "bert"): "model_type=bert",
        str(tmp_path / "nobin"): "has no *.safetensors",
        str(tmp_path / "hf"): "config.json n_layer=3 needs model.n_layers=3",
    }
    for folder, words in cases.items():
        line = _one_line([f"model.init_from={folder}"])
        assert line.startswith(f"model.init_from={folder}") and words in line, line
    line = _one_line([f"model.init_from={tmp_path / 'hf'}", "model.n_layers=3", "model.vocab_size=300"])
    assert "vocab_size=256" in line and "model.vocab_size" in line, line
    line = _one_line([f"model.init_from={tmp_path / 'hf'}", "model=llama/tiny"])
    assert "choose a model=gpt/* preset" in line, line


def test_mismatch_stops_the_command_before_its_run_directory(tmp_path):
    gpt2(tmp_path / "hf")  # gelu_new: gpt/tiny's exact GELU does not match
    out = bigtrain_cmd(
        "model=gpt/tiny", f"model.init_from={tmp_path / 'hf'}", "hydra.run.dir=run", cwd=tmp_path
    )
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        f"bigtrain: error: model.init_from={tmp_path / 'hf'}: config.json activation_function=gelu_new "
        "needs model.mlp=gelu_tanh, the model has gelu: set model.mlp=gelu_tanh, or model=hf to take every key "
        "from the folder"
    ]
    assert not (tmp_path / "run").exists()


def test_export_refuses_what_has_no_hf_layout(tmp_path, capsys):
    cfg = make_cfg(["model=gpt/tiny", *LM, "model.norm=rmsnorm"])
    _checkpoint(tmp_path / "a.ckpt", build_model(cfg.model, (32,), 256), as_dict(cfg)["model"])
    mlp = make_cfg([])  # the default run: an MLP
    _checkpoint(tmp_path / "b.ckpt", build_model(mlp.model, (30,), 2), as_dict(mlp)["model"])
    for name, words in (
        ("a.ckpt", "has no Hugging Face layout"),
        ("b.ckpt", "holds a mlp model"),
        ("c", "exist"),
    ):
        with pytest.raises(SystemExit) as e:
            export_main([str(tmp_path / name), str(tmp_path / "out"), "--format", "hf"])
        err = capsys.readouterr().err.splitlines()
        assert e.value.code == 2 and len(err) == 1 and words in err[0], err


def test_resume_of_a_run_from_before_gelu_tanh_is_refused(tmp_path):
    """Its saved `mlp: gelu` meant the tanh approximation: exact GELU would change the function."""
    from omegaconf import OmegaConf

    overrides = ["model=gpt/tiny", "data=stdlib_text", "metrics=lm"]
    saved = OmegaConf.to_container(bigtrain.compose(overrides))
    del saved["model"]["init_from"]  # a config saved before the key existed
    (tmp_path / "old" / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(saved), tmp_path / "old" / ".hydra" / "config.yaml")
    OmegaConf.save(OmegaConf.create(overrides), tmp_path / "old" / ".hydra" / "overrides.yaml")
    out = bigtrain_cmd("resume=old", cwd=tmp_path)
    assert out.returncode == 2 and len(out.stderr.splitlines()) == 1, out.stderr
    assert "meant the tanh approximation" in out.stderr and "model.mlp=gelu_tanh" in out.stderr


# --------------------------------------------------------------------------- fine-tuning


def _lm_loss(model, windows: torch.Tensor) -> float:
    x, y = windows[:, :-1].long(), windows[:, 1:].long()
    with torch.no_grad():
        out = model(x)
    logits = out if isinstance(out, torch.Tensor) else out.logits
    return F.cross_entropy(logits.flatten(0, 1), y.flatten()).item()


@pytest.mark.slow
def test_fine_tune_starts_at_the_imported_models_loss_and_exports(tmp_path):
    """A GPT-2 trained here for a moment (transformers' own model), imported: bigtrain's first
    training loss is that model's loss on the same batch, far below a random model's."""
    cfg = make_cfg(["model=gpt/tiny", *LM, "model.mlp=gelu_tanh"])
    dm = build_datamodule(cfg)
    dm.setup("fit")
    theirs = gpt2(tmp_path / "hf")
    theirs.train()
    opt = torch.optim.AdamW(theirs.parameters(), lr=3e-3)
    train = dm.splits["train"]
    for step in range(60):
        batch = train[torch.randint(0, len(train), (16,), generator=torch.Generator().manual_seed(step))]
        loss = theirs(batch[:, :-1].long(), labels=batch[:, :-1].long()).loss  # shifts inside
        opt.zero_grad()
        loss.backward()
        opt.step()
    theirs.eval().save_pretrained(tmp_path / "hf")
    (first,) = next(iter(dm.train_dataloader()))  # the run's first batch (seeded, no trainer yet)
    imported = _lm_loss(theirs, first)
    torch.manual_seed(0)
    random_loss = _lm_loss(build_model(cfg.model, (32,), 256).eval(), first)

    run_dir = tmp_path / "run"
    overrides = [*QUIET, "model=gpt/tiny", *LM, "model.mlp=gelu_tanh", f"model.init_from={tmp_path / 'hf'}"]
    overrides += ["trainer.max_epochs=-1", "trainer.max_steps=4", "trainer.log_every_n_steps=1"]
    overrides += ["trainer.limit_val_batches=2", "callbacks.samples.enabled=false"]
    results = bigtrain.train(overrides, run_dir=run_dir)
    lines = (run_dir / "metrics.csv").read_text().splitlines()
    rows = [r for r in csv.DictReader(lines) if r.get("train/loss")]
    started = float(rows[0]["train/loss"])
    print(f"first train loss {started:.4f}; imported model {imported:.4f}; random init {random_loss:.4f}; ")
    print(f"after {len(rows)} steps: test loss {results['test']['loss']:.4f}")
    assert abs(started - imported) < 1e-4
    assert random_loss - imported > 1.0 and abs(random_loss - math.log(256)) < 0.5
    assert results["status"] == "completed" and results["test"]["loss"] < random_loss - 1.0

    export_main([str(run_dir), str(tmp_path / "out"), "--format", "hf"])  # the run's best checkpoint
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    tuned = build_model(cfg.model, (32,), 256).eval()
    load_into(tuned, tmp_path / "out")
    assert max_diff(tuned, back) <= TOL
    assert abs(_lm_loss(back, first) - imported) < 1.0  # four steps on from where it started


# --------------------------------------------------------------------------- GELU choices


@pytest.mark.parametrize("mlp, approximate", [("gelu", "none"), ("gelu_tanh", "tanh")])
def test_gelu_choices(mlp, approximate):
    cfg = make_cfg(["model=gpt/tiny", *LM, f"model.mlp={mlp}"])
    block = build_model(cfg.model, (32,), 256).blocks[0].mlp
    x = torch.randn(3, 64)
    expected = block.w2(F.gelu(block.w1(x), approximate=approximate))
    torch.testing.assert_close(block(x), expected, rtol=0, atol=0)
    assert cfg.model.ffn_dim == 256


def test_presets_gelu():
    """gpt/tiny (and so gpt_stdlib) trains with exact GELU, the GPT-3 sizes with GPT-2's tanh."""
    assert make_cfg(["model=gpt/tiny", *LM]).model.mlp == "gelu"
    assert make_cfg(["+experiment=gpt_stdlib"]).model.mlp == "gelu"
    assert make_cfg(["model=gpt/125m", *LM]).model.mlp == "gelu_tanh"
    assert make_cfg(["model=llama/tiny", *LM]).model.init_from is None
