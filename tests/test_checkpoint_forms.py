"""`ARCH:/path/file.pt` as docs/models-and-data.md documents it: the architecture by name, the weights from a
local file (open_clip's state-dict form), even though the spec ends in `.pt`."""

from __future__ import annotations

import json

import torch
from conftest import run_cli


def _saved_weights(path):
    from p4q_export.models import load_model

    model = load_model("p4q-testbed").model
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))  # not the seeded random init
    torch.save(model.state_dict(), path)
    return model.state_dict()


def test_arch_colon_file_loads_the_files_weights(tmp_path):
    from p4q_export.models import load_model

    saved = _saved_weights(tmp_path / "my_testbed.pt")
    loaded = load_model(f"p4q-testbed:{tmp_path / 'my_testbed.pt'}")
    state = loaded.model.state_dict()
    assert loaded.name == "p4q-testbed"
    assert all(torch.equal(state[k], v) for k, v in saved.items())
    assert not torch.equal(load_model("p4q-testbed").model.state_dict()["visual.proj"], saved["visual.proj"])


def test_arch_colon_file_from_the_cli_and_a_missing_file(tmp_path):
    _saved_weights(tmp_path / "my_testbed.pt")
    proc = run_cli("--json", "eval", f"p4q-testbed:{tmp_path / 'my_testbed.pt'}", "--data", "fashion-mnist", "--limit", "50", check=True)
    assert json.loads(proc.stdout)["n"] == 50
    proc = run_cli("eval", f"p4q-testbed:{tmp_path / 'nope.pt'}", "--data", "fashion-mnist")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1] == f"error: model checkpoint not found: {tmp_path / 'nope.pt'}"
