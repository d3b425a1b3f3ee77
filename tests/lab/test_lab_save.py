"""Opening a runbook in JupyterLab does not dirty the checkout: a save through the server's contents
manager (in-process, configured as ``opsbook lab`` configures it) that changes only what JupyterLab
rewrites leaves the file byte for byte as it was."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
from opsbook import lab
from traitlets.config import Config

pytest.importorskip("jupyter_server")
from jupyter_server.services.contents.filemanager import FileContentsManager  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
RUNBOOK = "environment-check.ipynb"


def as_jupyterlab_has_it(model: dict) -> dict:
    """The model JupyterLab sends back after opening the notebook and starting its kernel."""
    model = {k: v for k, v in model.items() if k in ("type", "format", "content")}
    content = json.loads(json.dumps(model["content"]))
    content["metadata"]["kernelspec"]["display_name"] = "Python 3 (ipykernel)"
    content["metadata"]["language_info"] = {
        "codemirror_mode": {"name": "ipython", "version": 3}, "file_extension": ".py", "mimetype": "text/x-python",
        "name": "python", "nbconvert_exporter": "python", "pygments_lexer": "ipython3", "version": "3.11.9"}
    model["content"] = content
    return model


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    shutil.copy(ROOT / "notebooks" / RUNBOOK, tmp_path / RUNBOOK)
    return tmp_path


def manager(root: Path, *, hooks: bool) -> FileContentsManager:
    """The contents manager as ``opsbook lab`` configures the server's (its ``--ContentsManager.*`` flags)."""
    cfg = Config()
    if hooks:
        for arg in lab.command(port=1, token="t", root=root, open_browser=False):
            if arg.startswith("--ContentsManager."):
                key, value = arg[len("--ContentsManager."):].split("=", 1)
                cfg.ContentsManager[key] = value
        assert set(cfg.ContentsManager) == {"pre_save_hook", "post_save_hook"}
    return FileContentsManager(root_dir=str(root), config=cfg)


def test_saving_an_opened_runbook_unchanged_keeps_its_bytes(folder):
    before = (folder / RUNBOOK).read_bytes()
    cm = manager(folder, hooks=True)
    saved = cm.save(as_jupyterlab_has_it(cm.get(RUNBOOK)), RUNBOOK)
    assert (folder / RUNBOOK).read_bytes() == before
    # the modification time is the one the server reported: JupyterLab sees no conflict on its next save
    assert cm.get(RUNBOOK, content=False)["last_modified"] == saved["last_modified"]
    cm.save(as_jupyterlab_has_it(cm.get(RUNBOOK)), RUNBOOK)  # and again (autosave)
    assert (folder / RUNBOOK).read_bytes() == before


def test_without_the_hooks_the_same_save_rewrites_the_file(folder):
    before = (folder / RUNBOOK).read_bytes()
    cm = manager(folder, hooks=False)
    cm.save(as_jupyterlab_has_it(cm.get(RUNBOOK)), RUNBOOK)
    assert (folder / RUNBOOK).read_bytes() != before  # what the hooks prevent


def test_a_real_edit_is_saved_and_keeps_the_kernel_metadata_of_the_file(folder):
    original = json.loads((folder / RUNBOOK).read_text())
    cm = manager(folder, hooks=True)
    model = as_jupyterlab_has_it(cm.get(RUNBOOK))
    md = next(c for c in model["content"]["cells"] if c["cell_type"] == "markdown")
    md["source"] = md["source"] + "\n\nAn operator's note."
    cm.save(copy.deepcopy(model), RUNBOOK)
    now = json.loads((folder / RUNBOOK).read_text())
    assert any("An operator's note." in "".join(c["source"]) for c in now["cells"])
    assert now["metadata"]["kernelspec"] == original["metadata"]["kernelspec"]  # "Python 3", as in git
    assert now["metadata"].get("language_info") == original["metadata"].get("language_info")
