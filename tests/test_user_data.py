"""Users' own data: a CSV (and Parquet) table and a folder of PNG images, both written here from
scikit-learn's bundled data, trained for a few steps; plus every data error the user can make."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from bigtrain.config import ConfigError, ViTConfig
from bigtrain.data import build_datamodule, data_spec
from bigtrain.data.images import augment, channel_stats
from bigtrain.models import build_model
from conftest import QUIET, bigtrain_cmd, make_cfg

# --------------------------------------------------------------------------- a CSV of breast cancer


def write_cancer_csv(path: Path, split_column: bool = False) -> Path:
    """Breast cancer (569 x 30) with string labels and a categorical 'size' column (small/medium/
    large by tertile of mean radius), optionally with a train/val/test column."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    names = [n.replace(" ", "_") for n in data.feature_names]
    radius = data.data[:, 0]
    cuts = np.quantile(radius, [1 / 3, 2 / 3])
    size = np.where(radius < cuts[0], "small", np.where(radius < cuts[1], "medium", "large"))
    split = np.array(["train"] * 400 + ["val"] * 85 + ["test"] * 84)
    np.random.default_rng(0).shuffle(split)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*names, "size", "diagnosis", *(["split"] if split_column else [])])
        for i in range(len(data.target)):
            label = data.target_names[data.target[i]]  # 'malignant' / 'benign'
            w.writerow(
                [*(f"{v:.6g}" for v in data.data[i]), size[i], label, *([split[i]] if split_column else [])]
            )
    return path


def csv_overrides(path: Path, *extra: str) -> list[str]:
    return ["data=csv", f"data.path={path}", "data.target=diagnosis", "data.categorical=[size]", *extra]


def test_csv_columns_are_encoded_from_the_train_split(tmp_path):
    path = write_cancer_csv(tmp_path / "cancer.csv")
    cfg = make_cfg(csv_overrides(path))
    spec = data_spec(cfg)
    assert spec.task == "binary" and spec.num_classes == 2
    assert spec.input_shape == (30 + 3,)  # 30 numeric + one-hot of 3 sizes
    dm = build_datamodule(cfg)
    dm.setup("fit")
    assert dm.table.classes == ["benign", "malignant"]  # sorted names -> 0, 1
    assert sum(dm.sizes().values()) == 569
    assert sum(sum(v) for v in dm.class_balance().values()) == 569
    x_train = dm.splits["train"][0]
    # Numeric columns standardised by training statistics, one-hot columns left as 0/1.
    assert torch.allclose(x_train[:, :30].mean(0), torch.zeros(30), atol=1e-4)
    assert set(x_train[:, 30:].unique().tolist()) == {0.0, 1.0}
    assert torch.all(x_train[:, 30:].sum(1) == 1)


def test_csv_trains_and_learns(tmp_path, run):
    path = write_cancer_csv(tmp_path / "cancer.csv", split_column=True)
    results, _ = run(
        csv_overrides(
            path, "data.split_column=split", "model=mlp/tiny", "trainer.max_epochs=4", "callbacks.plots=false"
        )
    )
    assert results["status"] == "completed"
    # 63% of the rows are benign: a model that learned nothing scores about 0.63.
    assert results["test"]["acc"] > 0.85
    assert results["test"]["auroc"] > 0.9


def test_separate_split_files_and_parquet(tmp_path, run):
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    full = write_cancer_csv(tmp_path / "all.csv", split_column=True)
    with open(full, newline="") as f:
        rows = list(csv.DictReader(f))
    paths = {}
    for s in ("train", "val", "test"):
        part = [r for r in rows if r["split"] == s]
        cols = {
            k: [float(r[k]) if k not in ("size", "diagnosis", "split") else r[k] for r in part]
            for k in rows[0]
        }
        paths[s] = tmp_path / f"{s}.parquet"
        pq.write_table(pa.table(cols), paths[s])
    results, _ = run(
        [
            "data=csv",
            *(f"data.{s}_path={p}" for s, p in paths.items()),
            "data.target=diagnosis",
            "data.features=[mean_radius,worst_area,worst_concave_points,size]",
            "data.categorical=[size]",
            "model=mlp/tiny",
            "trainer.max_epochs=3",
            "callbacks.plots=false",
        ]
    )
    assert results["params"] == PARAMS_6_INPUTS
    assert results["test"]["acc"] > 0.8


# mlp/tiny on 3 numeric features and one one-hot over 3 sizes: 6 inputs, 32 hidden, 1 logit.
PARAMS_6_INPUTS = 6 * 32 + 32 + 32 * 1 + 1


def _error(overrides: list[str]) -> str:
    with pytest.raises(ConfigError) as e:
        cfg = make_cfg(overrides)
        build_datamodule(cfg).setup("fit")
    message = str(e.value)
    assert "\n" not in message
    return message


def test_csv_errors_are_one_line(tmp_path):
    path = write_cancer_csv(tmp_path / "cancer.csv", split_column=True)
    assert "does not exist" in _error(["data=csv", f"data.path={tmp_path}/nope.csv", "data.target=diagnosis"])
    assert "data.target=COLUMN" in _error(["data=csv", f"data.path={path}"])
    assert "did you mean diagnosis" in _error(["data=csv", f"data.path={path}", "data.target=diagnosiss"])
    assert "column 'colour'" in _error(csv_overrides(path, "data.features=[mean_radius,colour]"))
    assert "data.path=FILE" in _error(["data=csv", "data.target=diagnosis"])
    assert "data.test_path" in _error(
        ["data=csv", f"data.train_path={path}", f"data.val_path={path}", "data.target=y"]
    )
    # 'size' is text: without data.categorical it is a numeric column with non-numeric values.
    msg = _error(["data=csv", f"data.path={path}", "data.target=diagnosis", "data.split_column=split"])
    assert "numeric column 'size'" in msg and "data.categorical" in msg

    one_class = tmp_path / "one.csv"
    one_class.write_text("a,b,y\n" + "".join(f"{i},{i % 3},yes\n" for i in range(30)))
    assert "one class" in _error(["data=csv", f"data.path={one_class}", "data.target=y"])

    no_val = tmp_path / "noval.csv"
    no_val.write_text(
        "a,y,s\n" + "".join(f"{i},{i % 2},{'train' if i < 20 else 'test'}\n" for i in range(30))
    )
    assert "val split is empty" in _error(
        ["data=csv", f"data.path={no_val}", "data.target=y", "data.split_column=s"]
    )

    dev = tmp_path / "dev.csv"
    dev.write_text(
        "a,y,s\n" + "".join(f"{i},{i % 2},{('train', 'val', 'test', 'dev')[i % 4]}\n" for i in range(40))
    )
    assert "holds 'dev'" in _error(["data=csv", f"data.path={dev}", "data.target=y", "data.split_column=s"])

    unseen = tmp_path / "unseen.csv"
    rows = [(i, "a" if i % 2 else "b", ("train", "val", "test")[i % 3]) for i in range(30)] + [
        (99, "c", "test")
    ]
    unseen.write_text("x,y,s\n" + "".join(f"{x},{y},{s}\n" for x, y, s in rows))
    assert "class 'c'" in _error(["data=csv", f"data.path={unseen}", "data.target=y", "data.split_column=s"])

    wrong = tmp_path / "data.txt"
    wrong.write_text("a,y\n1,0\n")
    assert "neither CSV nor Parquet" in _error(["data=csv", f"data.path={wrong}", "data.target=y"])


def test_csv_error_from_the_command_line_exits_2_before_a_run_directory(tmp_path):
    path = write_cancer_csv(tmp_path / "cancer.csv")
    proc = bigtrain_cmd(
        "data=csv", f"data.path={path}", "data.target=diagnosis", "hydra.run.dir=runs/x", *QUIET, cwd=tmp_path
    )
    assert proc.returncode == 2 and not (tmp_path / "runs").exists()
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "numeric column 'size'" in err[0]


# --------------------------------------------------------------------------- a folder of digit PNGs


def write_digit_pngs(
    root: Path, size: int = 16, per_class: int | None = None, split_folders: bool = False
) -> Path:
    """scikit-learn's 8x8 digits as size x size grey PNGs in root/<digit>/ (or root/<split>/<digit>/)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    counts: dict[int, int] = {}
    for i, (img, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        counts[label] = counts.get(label, 0) + 1
        if per_class is not None and counts[label] > per_class:
            continue
        split = ("train", "train", "train", "val", "test")[counts[label] % 5] if split_folders else ""
        folder = root / split / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (img * (255 / 16)).astype(np.uint8)  # digits pixels are 0..16
        Image.fromarray(pixels, mode="L").resize((size, size), Image.NEAREST).save(folder / f"{i}.png")
    return root


def image_overrides(root: Path, *extra: str) -> list[str]:
    return ["data=image_folder", f"data.root={root}", "data.channels=1", "data.image_size=16", *extra]


def test_image_folder_decodes_splits_and_normalises(tmp_path):
    root = write_digit_pngs(tmp_path / "digits", per_class=20)
    cfg = make_cfg(image_overrides(root, "data.image_size=8", "model=cnn/tiny"))
    dm = build_datamodule(cfg)
    dm.setup("fit")
    assert dm.spec.input_shape == (1, 8, 8) and dm.spec.num_classes == 10
    assert sum(dm.sizes().values()) == 200
    train = dm.class_balance()["train"]
    assert 135 <= sum(train) <= 145 and max(train) - min(train) <= 1  # stratified: about 70% of 20 per class
    x, _ = next(iter(dm.val_dataloader()))
    assert x.dtype == torch.float32 and x.shape[1:] == (1, 8, 8)
    # Training statistics: the normalised training images have mean 0 and std 1.
    xs = torch.cat([b for b, _ in dm.train_dataloader()])
    assert abs(float(xs.mean())) < 0.1 and abs(float(xs.std()) - 1) < 0.1


def test_augmentations_crop_and_flip_with_torch_ops():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4) + 1
    gen = torch.Generator().manual_seed(0)
    flipped = augment(x, 0, True, torch.Generator().manual_seed(1))
    for i in range(2):  # each image is either itself or its mirror
        assert torch.equal(flipped[i], x[i]) or torch.equal(flipped[i], x[i].flip(-1))
    cropped = augment(x, 2, False, gen)
    assert cropped.shape == x.shape
    for i in range(2):
        # A crop of the zero-padded image: every non-zero pixel comes from the image, in order.
        kept = cropped[i][cropped[i] > 0]
        assert set(kept.tolist()) <= set(x[i].flatten().tolist())
        assert torch.equal(kept, kept.sort().values)
    mean, std = channel_stats(torch.full((3, 2, 4, 4), 51, dtype=torch.uint8))
    assert torch.allclose(mean, torch.tensor([0.2, 0.2])) and torch.all(std == 1e-3)


def test_image_folder_trains_a_cnn_and_learns(tmp_path, run):
    root = write_digit_pngs(tmp_path / "digits", per_class=40)
    results, _ = run(
        image_overrides(
            root,
            "model=cnn/tiny",
            "trainer.max_epochs=4",
            "data.batch_size=32",
            "data.crop_padding=1",
            "callbacks.plots=false",
            "callbacks.checkpoint.save_last=false",
        )
    )
    # 279 training images: 8 full steps and one of 23 an epoch
    assert results["status"] == "completed" and results["global_step"] == 4 * 9
    assert results["test"]["acc"] > 0.5  # 10 classes: chance is 0.1


@pytest.mark.slow
def test_image_split_folders_and_vit(tmp_path, run):
    root = write_digit_pngs(tmp_path / "digits", per_class=100, split_folders=True)
    results, run_dir = run(
        image_overrides(
            root,
            "model=vit/tiny",
            "trainer.max_epochs=8",
            "data.batch_size=32",
            "optim.lr=3e-3",
            "callbacks.plots=false",
        )
    )
    assert results["status"] == "completed"
    assert sum(1 for _ in (root / "test").rglob("*.png")) == 200
    assert results["test"]["acc"] > 0.3  # chance is 0.1


def test_image_folder_errors(tmp_path):
    assert "data.root=DIR" in _error(["data=image_folder"])
    assert "is not a folder" in _error(["data=image_folder", f"data.root={tmp_path}/nope"])
    (tmp_path / "one" / "cat").mkdir(parents=True)
    assert "at least 2" in _error(["data=image_folder", f"data.root={tmp_path / 'one'}"])
    root = write_digit_pngs(tmp_path / "d", per_class=5)
    assert "cannot be split" in _error(image_overrides(root))  # 50 images: 8 for test, 10 classes
    assert "no val/" in _error(image_overrides(_train_only(tmp_path)))
    assert "data.mean needs 1 values" in _error(image_overrides(root, "data.mean=[0.5,0.5]", "data.std=[1]"))
    assert "model.patch_size=3" in _error(image_overrides(root, "model=vit/tiny", "model.patch_size=3"))
    assert "halve 4x4" in _error(
        image_overrides(root, "model=cnn/tiny", "data.image_size=4", "model.channels=[4,4,4]")
    )
    assert "data.max_memory_mb" in _error(
        image_overrides(root, "data.image_size=512", "data.max_memory_mb=1")
    )
    (root / "3" / "broken.png").write_text("not an image")
    assert "cannot read image" in _error(
        # 19 training images: a smaller global batch, so that the broken file is the only mistake
        image_overrides(root, "data.test_fraction=0.3", "data.val_fraction=0.3", "data.batch_size=16")
    )


def _train_only(tmp_path: Path) -> Path:
    root = tmp_path / "train_only"
    for c in ("a", "b"):
        (root / "train" / c).mkdir(parents=True)
    return root


def test_vit_shapes_and_parameter_count():
    cfg = ViTConfig(family="vit", patch_size=4, dim=32, depth=2, heads=2, mlp_ratio=2.0, dropout=0.0)
    model = build_model(cfg, (1, 16, 16), 10)
    assert model(torch.zeros(3, 1, 16, 16)).shape == (3, 10)
    # patch conv 1*4*4*32+32, cls 32, pos 17*32, per block: 2 norms 4*32, qkv 32*96+96, proj 32*32+32,
    # mlp 32*64+64 + 64*32+32; final norm 64; head 32*10+10.
    block = 4 * 32 + (32 * 96 + 96) + (32 * 32 + 32) + (32 * 64 + 64) + (64 * 32 + 32)
    expected = (16 * 32 + 32) + 32 + 17 * 32 + 2 * block + 64 + 330
    assert sum(p.numel() for p in model.parameters()) == expected


def test_cnn_pools_large_images_to_a_small_map():
    cfg = make_cfg(["model=cnn/tiny"]).model
    small = build_model(cfg, (1, 8, 8), 10)
    large = build_model(cfg, (3, 224, 224), 10)
    assert large(torch.zeros(2, 3, 224, 224)).shape == (2, 10)
    # Dense input after pooling: 16 channels x 4 x 4 however large the image.
    assert large.head[1].in_features == 16 * 4 * 4
    assert small.head[1].in_features == 16 * 2 * 2 and isinstance(small.pool, torch.nn.Identity)


def test_image_batches_keep_the_global_batch_and_shard_evaluation(tmp_path):
    root = write_digit_pngs(tmp_path / "digits", per_class=12)
    cfg = make_cfg(image_overrides(root, "data.image_size=8", "data.batch_size=16", "data.hflip=true"))
    dm = build_datamodule(cfg)
    dm.setup("fit")
    loaders = {}
    for rank in (0, 1):
        dm._topology = lambda rank=rank: (rank, 2, 1)  # what a 2-process Trainer reports
        loaders[rank] = (dm.train_dataloader(), dm.val_dataloader())
    # Training: each optimizer step is 16 images, 8 on each rank; the last 84 - 5 x 16 = 4 images
    # of the epoch make one more step, 2 on each rank.
    steps = [list(loaders[r][0]) for r in (0, 1)]
    assert len(dm.splits["train"][1]) == 84 and len(steps[0]) == len(steps[1]) == 6
    assert all(x.shape == (8 if i < 5 else 2, 1, 8, 8) for s in steps for i, (x, _) in enumerate(s))
    # Evaluation: every validation image on exactly one rank.
    seen = torch.cat([y for r in (0, 1) for _, y in loaders[r][1]])
    assert len(seen) == len(dm.splits["val"][1])
    assert sorted(seen.tolist()) == sorted(dm.splits["val"][1].tolist())
