"""The README's quick start runs as written: its CPU block end to end on the test bed (only the four
input lines MODEL, DATA, RECIPE, OUT replaced), its GPU block to the one-line "no TensorRT/GPU"
refusal where there is none, and every option of every block exists in the command's --help."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from p4q_export.runtime.trt_engine import trt_available

REPO = Path(__file__).resolve().parents[1]
INPUTS = ("MODEL", "DATA", "RECIPE", "OUT")


def quickstart_blocks(text: str) -> dict[str, str]:
    found = re.findall(r"<!-- quickstart: (\w+) -->\s*```bash\n(.*?)```", text, flags=re.DOTALL)
    return dict(found)


def split_block(block: str) -> tuple[dict[str, str], list[str]]:
    """Leading NAME=value lines (the user's inputs) and the command lines after them."""
    assignments, commands = {}, []
    for line in block.splitlines():
        code = line.split("  #")[0].strip()
        if not code:
            continue
        m = re.fullmatch(r"([A-Z]+)=(\S+)", code)
        if m and not commands:
            assignments[m[1]] = m[2]
        else:
            commands.append(code)
    return assignments, commands


BLOCKS = quickstart_blocks((REPO / "README.md").read_text())


def test_the_readme_has_the_three_quickstart_blocks_with_the_users_inputs_first():
    assert set(BLOCKS) == {"cpu", "gpu", "jetson"}
    assignments, commands = split_block(BLOCKS["cpu"])
    assert tuple(assignments) == INPUTS
    steps = [c.split()[1] for c in commands if c.startswith("p4q-export ")]
    assert steps[:1] == ["eval"] and {"train", "export", "validate", "bench"} <= set(steps)


@pytest.mark.parametrize("name", ["cpu", "gpu", "jetson"])
def test_every_quickstart_option_exists(name):
    helps: dict[str, str] = {}
    for line in split_block(BLOCKS[name])[1]:
        words = shlex.split(line.split("p4q-export ", 1)[1]) if "p4q-export " in line else []
        if not words:
            continue
        command = words[0]
        if command not in helps:
            proc = subprocess.run([sys.executable, "-m", "p4q_export.cli", command, "--help"], capture_output=True,
                                  text=True, env={**os.environ, "COLUMNS": "200"}, check=True)
            helps[command] = proc.stdout
        for word in words[1:]:
            if word.startswith("--"):
                assert re.search(rf"{re.escape(word.split('=')[0])}\b", helps[command]), f"{command} has no {word}"


def _run(commands: list[str], env: dict, expect_refusal: bool) -> None:
    for command in commands:
        proc = subprocess.run(["bash", "-c", command], check=False, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
        if not expect_refusal:
            assert proc.returncode == 0, f"{command}\n{proc.stderr[-2000:]}"
        else:
            lines = [line for line in proc.stderr.splitlines() if line.strip()]
            assert proc.returncode == 2 and len(lines) == 1, f"{command}: {proc.returncode}\n{proc.stderr[-2000:]}"
            assert "TensorRT is not installed" in lines[0] or "no CUDA GPU" in lines[0]


@pytest.mark.slow
@pytest.mark.full
def test_the_cpu_quickstart_runs_on_the_test_bed_and_the_gpu_one_refuses_in_one_line(tmp_path):
    """eval, PTQ eval, P4Q train, export, validate and bench of the test bed (about a minute and a
    half on 2 cores): the user's recipe is the test bed's W8A8 one, trained 3 epochs instead of 60."""
    recipe = tmp_path / "recipe.yaml"
    text = (REPO / "recipes" / "testbed-p4q-w8a8.yaml").read_text()
    assert "\nepochs: 60\n" in text
    recipe.write_text(text.replace("\nepochs: 60\n", "\nepochs: 3\n"))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "P4Q_NO_PROGRESS": "1",
           "MODEL": "testbed", "DATA": "fashion-mnist", "RECIPE": str(recipe), "OUT": str(tmp_path / "quickstart")}
    _run(split_block(BLOCKS["cpu"])[1], env, expect_refusal=False)
    bundle = tmp_path / "quickstart" / "bundle"
    assert (bundle / "deploy" / "manifest.json").is_file()
    if not trt_available():
        _run(split_block(BLOCKS["gpu"])[1], env, expect_refusal=True)
