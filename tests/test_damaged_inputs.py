"""Damaged inputs are named in one line with exit 2, in the main process and in data-loading
workers: unreadable and oversized images, class names that do not match the folders, folders whose
splits disagree, empty recipes, a run of another recipe. Each runs the real CLI in a subprocess."""

from __future__ import annotations

import json
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image

FAST_EVAL = ["--device", "cpu", "--json"]


def _error_line(proc: subprocess.CompletedProcess) -> str:
    """The run's stderr is exactly one line, `error: ...`, and there is nothing on stdout."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    assert proc.stdout == ""
    return lines[0]


def _bomb_png(path: Path, side: int = 20000) -> Path:
    """A valid 1-bit PNG declaring side×side pixels: 50 kB on disk, 1.2 GB as RGB once decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" + b"\x00" * ((side + 7) // 8)
    z = zlib.compressobj(9)
    body = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def fashion():
    from p4q_export.data import load_dataset

    return load_dataset("fashion-mnist", "test")


def _folder(root: Path, fashion, classes=("bag", "sneaker", "trouser"), per_class: int = 4, splits=("train", "val")) -> Path:
    codes = {"trouser": 1, "sneaker": 7, "bag": 8}
    for split in splits:
        for name in classes:
            idx = np.flatnonzero(fashion.labels == codes[name])[:per_class]
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for k, i in enumerate(idx):
                Image.fromarray(fashion.arrays[i]).save(root / split / name / f"{k}.png")
    return root


# --- images --------------------------------------------------------------------------------------


def test_a_decompression_bomb_is_refused_before_decoding(random_testbed_bundle, tmp_path):
    bomb = _bomb_png(tmp_path / "huge.png")
    assert bomb.stat().st_size < 200_000
    line = _error_line(run_cli("predict", str(random_testbed_bundle), str(bomb)))
    assert f"image too large: {bomb} has 20000×20000 = 400,000,000 pixels" in line
    assert "over the limit of 89,478,485" in line and "--max-image-pixels" in line


def test_the_pixel_limit_flag_lowers_and_raises_the_limit(random_testbed_bundle, tmp_path, fashion):
    small = tmp_path / "shoe.png"
    Image.fromarray(fashion.arrays[0]).resize((64, 48)).save(small)  # 3,072 pixels
    line = _error_line(run_cli("--max-image-pixels", "3000", "predict", str(random_testbed_bundle), str(small)))
    assert "3,072 pixels" in line and "limit of 3,000" in line
    ok = run_cli("--max-image-pixels", "3072", "--json", "predict", str(random_testbed_bundle), str(small))
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["predictions"][0]["file"] == str(small)
    bad_env = run_cli("predict", str(random_testbed_bundle), str(small), env={"P4Q_MAX_IMAGE_PIXELS": "lots"})
    assert "P4Q_MAX_IMAGE_PIXELS must be a whole number of pixels" in _error_line(bad_env)


def test_between_one_and_two_limits_no_pillow_warning_leaks(random_testbed_bundle, tmp_path):
    # Pillow only warns up to twice its limit: the warning must not become a second line
    big = _bomb_png(tmp_path / "big.png", side=10000)  # 100 M pixels: over 89 M, under 179 M
    line = _error_line(run_cli("predict", str(random_testbed_bundle), str(big)))
    assert "10000×10000" in line and "Warning" not in line


@pytest.mark.parametrize("workers", ["0", "2"])
def test_a_text_file_named_png_in_an_image_folder_is_one_line(tmp_path, fashion, workers):
    root = _folder(tmp_path / "data", fashion)
    bad = root / "val" / "bag" / "notes.png"
    bad.write_text("this is not a picture")
    proc = run_cli("eval", "p4q-testbed", "--data", f"imagefolder:{root}", "--workers", workers, *FAST_EVAL)
    line = _error_line(proc)
    assert line == f"error: not a readable image: {bad} (UnidentifiedImageError)"
    assert "DataLoader worker" not in proc.stderr


def test_a_damaged_training_image_met_while_calibrating_leaves_no_run(tmp_path, fashion):
    root = _folder(tmp_path / "data", fashion)
    bad = root / "train" / "bag" / "notes.png"
    bad.write_text("this is not a picture")
    out = tmp_path / "run"
    proc = run_cli("train", "--set", "model=p4q-testbed", "--set", f"data=imagefolder:{root}", "--set", "shots=2",
                   "--set", "epochs=1", "--set", "calib_images=12", "--out", str(out), "--device", "cpu", "--workers", "2",
                   env={"P4Q_NO_PROGRESS": ""})  # progress on, as for a user: the error is still the only line
    assert _error_line(proc) == f"error: not a readable image: {bad} (UnidentifiedImageError)"
    assert not out.exists()


def test_an_oversized_image_in_a_folder_is_named_from_a_worker(tmp_path, fashion):
    root = _folder(tmp_path / "data", fashion)
    _bomb_png(root / "val" / "sneaker" / "huge.png")
    proc = run_cli("eval", "p4q-testbed", "--data", f"imagefolder:{root}", "--workers", "2", *FAST_EVAL)
    assert "image too large" in _error_line(proc) and "huge.png" in proc.stderr


# --- class names and folders -----------------------------------------------------------------


def test_classnames_txt_naming_missing_folders_and_omitting_others(tmp_path, fashion):
    root = _folder(tmp_path / "data", fashion, classes=("bag", "sneaker", "trouser"))
    (root / "classnames.txt").write_text("bag\tHandbag\nsandal\tSandal\n")
    line = _error_line(run_cli("eval", "p4q-testbed", "--data", f"imagefolder:{root}", *FAST_EVAL))
    assert "names 1 folder(s) that do not exist (sandal)" in line
    assert "leaves out 2 class folder(s) (sneaker, trouser)" in line
    out = tmp_path / "run"
    proc = run_cli("train", "--set", "model=p4q-testbed", "--set", f"data=imagefolder:{root}", "--set", "shots=2",
                   "--set", "epochs=1", "--set", "calib_images=8", "--out", str(out), "--device", "cpu")
    assert "does not match the class folders" in _error_line(proc) and not out.exists()


def test_train_and_val_with_different_class_folders_are_refused(tmp_path, fashion):
    root = _folder(tmp_path / "data", fashion, classes=("bag", "sneaker", "trouser"), splits=("train",))
    _folder(root, fashion, classes=("bag", "trouser"), splits=("val",))
    # sorted labels would make val's "trouser" label 1, train's "sneaker"
    line = _error_line(run_cli("eval", "p4q-testbed", "--data", f"imagefolder:{root}", *FAST_EVAL))
    assert "val/ and train/ have different class folders (only in train/: sneaker)" in line


def test_eval_names_a_val_split_and_prints_percentages(tmp_path, fashion):
    root = _folder(tmp_path / "data", fashion)
    proc = run_cli("eval", "p4q-testbed", "--data", f"imagefolder:{root}", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    line = proc.stdout.strip()
    assert line.startswith("fp_zeroshot: top-1 ") and "% on 12 val images of imagefolder:" in line, line
    top1 = float(line.split("top-1 ")[1].split("%")[0])
    data = json.loads(run_cli("eval", "p4q-testbed", "--data", f"imagefolder:{root}", *FAST_EVAL).stdout)
    assert data["split"] == "val" and top1 == pytest.approx(100 * data["top1"], abs=0.005)


# --- recipes and runs ------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "# nothing yet\n", "{}\n"])
def test_an_empty_recipe_is_refused(tmp_path, text):
    recipe = tmp_path / "mine.yaml"
    recipe.write_text(text)
    out = tmp_path / "run"
    line = _error_line(run_cli("train", "--recipe", str(recipe), "--out", str(out)))
    assert line == f"error: recipe {recipe} is empty: it sets nothing (leave --recipe out to use the defaults)"
    assert not out.exists()


def test_a_default_only_recipe_says_so(tmp_path, capsys):
    from p4q_export.config import TrainRecipe, load_recipe

    recipe = tmp_path / "defaults.yaml"
    recipe.write_text(f"epochs: {TrainRecipe().epochs}\nshots: {TrainRecipe().shots}\n")
    assert load_recipe(recipe, None, TrainRecipe) == TrainRecipe()
    assert "sets only default values (epochs, shots): this is the default recipe" in capsys.readouterr().err
    recipe.write_text("epochs: 3\n")
    load_recipe(recipe, None, TrainRecipe)
    assert "default" not in capsys.readouterr().err


def test_a_run_of_another_recipe_is_refused_before_any_work(tmp_path):
    out = tmp_path / "run"
    base = ["train", "--set", "model=p4q-testbed", "--set", "data=digits", "--set", "calib_images=8", "--set", "epochs=1",
            "--set", "shots=1", "--out", str(out), "--device", "cpu", "--workers", "0"]
    first = run_cli(*base)
    assert first.returncode == 0, first.stderr[-2000:]
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    proc = run_cli(*base, "--set", "shots=2")
    assert "holds a run of a different recipe or seed" in _error_line(proc)
    assert "zero-shot top-1" in first.stderr and "zero-shot top-1" not in proc.stderr  # refused before any evaluation
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


# --- checkpoints as users have them ----------------------------------------------------------------


def _perturbed_testbed():
    import torch

    from p4q_export.models import load_model

    model = load_model("p4q-testbed").model
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))  # not the seeded random init
    return model


def _torchscript_like_openai(model, path: Path) -> None:
    """Traced, with the three scalars OpenAI's released archives carry beside the weights."""
    import torch

    ctx = model.context_length
    for name, value in (("input_resolution", 32), ("context_length", ctx), ("vocab_size", 49408)):
        if hasattr(model, name):
            delattr(model, name)
        model.register_buffer(name, torch.tensor(value))
    model.output_dict = False
    traced = torch.jit.trace(model, (torch.randn(1, 3, 32, 32), torch.zeros(1, ctx, dtype=torch.long)), check_trace=False)
    traced.save(str(path))


@pytest.mark.parametrize("form", ["torchscript.pt", "weights.safetensors", "ddp.pth", "open_clip_pytorch_model.bin"])
def test_every_checkpoint_form_loads_its_weights(tmp_path, form):
    import torch
    from safetensors.torch import save_file

    from p4q_export.models import load_model

    model = _perturbed_testbed()
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    path = tmp_path / form
    if form.startswith("torchscript"):
        _torchscript_like_openai(model, path)
    elif form.endswith(".safetensors"):
        save_file({k: v.contiguous() for k, v in expected.items()}, str(path))
    elif form.startswith("ddp"):
        torch.save({"state_dict": {f"module.{k}": v for k, v in expected.items()}, "epoch": 3}, path)
    else:
        torch.save(expected, path)
    state = load_model(f"p4q-testbed:{path}").model.state_dict()
    assert set(state) == set(expected) and all(torch.equal(state[k], v) for k, v in expected.items())


def test_an_openai_torchscript_file_from_the_cli(tmp_path):
    path = tmp_path / "openai.pt"
    _torchscript_like_openai(_perturbed_testbed(), path)
    proc = run_cli("eval", f"p4q-testbed:{path}", "--data", "fashion-mnist", "--limit", "40", *FAST_EVAL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["n"] == 40
    wrong = run_cli("eval", f"ViT-B-32:{path}", "--data", "fashion-mnist", "--limit", "40", *FAST_EVAL)
    assert "cannot load model" in _error_line(wrong)  # weights of another architecture: one line


def test_a_model_folder_without_weights_is_refused(tmp_path, testbed_model):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "open_clip_config.json").write_bytes((testbed_model / "open_clip_config.json").read_bytes())
    line = _error_line(run_cli("eval", str(folder), "--data", "fashion-mnist", "--limit", "10", *FAST_EVAL))
    assert f"{folder} has open_clip_config.json but no weights file" in line


def test_a_model_folder_with_safetensors_loads(tmp_path, testbed_model):
    import torch
    from safetensors.torch import save_file

    from p4q_export.models import load_model

    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "open_clip_config.json").write_bytes((testbed_model / "open_clip_config.json").read_bytes())
    expected = load_model(str(testbed_model)).model.state_dict()
    save_file({k: v.contiguous() for k, v in expected.items()}, str(folder / "open_clip_model.safetensors"))
    state = load_model(str(folder)).model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in expected.items())


def test_a_damaged_tiff_is_one_line_without_pillow_warnings(random_testbed_bundle, tmp_path, fashion):
    good = tmp_path / "scan.tif"
    Image.fromarray(fashion.arrays[0]).save(good)
    damaged = tmp_path / "damaged.tif"
    damaged.write_bytes(good.read_bytes()[:40])
    line = _error_line(run_cli("predict", str(random_testbed_bundle), str(damaged)))
    assert line.startswith(f"error: not a readable image: {damaged}")


def test_classnames_txt_lines_naming_folders_with_spaces_and_duplicates(tmp_path):
    from p4q_export.data.classnames import resolve_classnames
    from p4q_export.errors import UserError

    (tmp_path / "classnames.txt").write_text("\ufeffhot dog\ncat\tHouse cat\n")  # a BOM, as Windows editors write
    assert resolve_classnames(["cat", "hot dog"], tmp_path).names == ["House cat", "hot dog"]
    (tmp_path / "classnames.txt").write_text("cat\ncat\tHouse cat\nhot dog\n")
    with pytest.raises(UserError, match="names class folder 'cat' twice"):
        resolve_classnames(["cat", "hot dog"], tmp_path)
    (tmp_path / "classnames.txt").write_bytes("cat\tchat noir\xe9\n".encode("latin-1"))
    with pytest.raises(UserError, match="is not UTF-8 text"):
        resolve_classnames(["cat"], tmp_path)


def test_a_binary_file_as_recipe_is_one_line(tmp_path):
    weights = tmp_path / "model.pt"
    weights.write_bytes(b"PK\x03\x04\xff\xfe\x00\x81 not text")
    line = _error_line(run_cli("train", "--recipe", str(weights), "--out", str(tmp_path / "run")))
    assert line == f"error: recipe {weights} is not a YAML text file (not UTF-8)"


def test_bare_command_prints_help_and_no_error_line():
    proc = run_cli()
    assert "Usage:" in proc.stdout + proc.stderr and "error:" not in proc.stderr and "Traceback" not in proc.stderr


def test_a_model_folder_with_openai_torchscript_weights(tmp_path, testbed_model):
    import torch

    from p4q_export.models import load_model

    model = load_model(str(testbed_model)).model
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "open_clip_config.json").write_bytes((testbed_model / "open_clip_config.json").read_bytes())
    _torchscript_like_openai(model, folder / "model.pth")
    state = load_model(str(folder)).model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in expected.items())
