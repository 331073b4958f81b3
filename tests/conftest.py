"""Shared pytest fixtures. Real data lives in ../shared/data (never in the repo); tests needing it skip
outside CI and fail inside CI (CI=true) when it is missing."""
import os
from pathlib import Path

import pytest

os.environ.setdefault('HF_HUB_OFFLINE', '1')
ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get('CI', '').lower() == 'true'


def need(path_or_none, what: str):
    "Skip (outside CI) or fail (in CI) when a required resource is missing."
    if path_or_none is None or not Path(path_or_none).exists():
        msg = f"{what} not available"
        if IN_CI: pytest.fail(msg + " (required when CI=true)")
        pytest.skip(msg)
    return Path(path_or_none)


@pytest.fixture(scope='session')
def shared_data():
    from reprod.core import shared_data_dir
    return need(shared_data_dir(), '../shared/data')



@pytest.fixture(scope='session')
def eurosat_vtab(shared_data, tmp_path_factory):
    "VTAB-1k EuroSAT generated once per session from ../shared/data: (data_root, task folder)."
    from reprod.data import vtab
    root = tmp_path_factory.mktemp('vtab')
    return root, vtab.make_vtab_layout(shared_data/'eurosat_rgb.tar', root/'eurosat', seed=0)


def notebook_error(name: str, params: dict, out_dir) -> str:
    "Run experiment notebook `name` expecting it to fail: the one error message (and no result record left behind)."
    from reprod.runs import NotebookRunError, run_notebook
    with pytest.raises(NotebookRunError) as e:
        run_notebook(name, {**params, 'out_dir': str(out_dir)}, cwd=ROOT)
    assert not (Path(out_dir)/'result.json').exists()
    return str(e.value)
