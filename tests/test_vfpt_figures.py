"""VFPT analysis figures (paper Figs. 3 and 4): the figure notebook on its defaults (it trains its own tiny model), on a
`vfpt_vtab` smoke run's output folder, and with a bad run_dir."""
from pathlib import Path

import numpy as np
import pytest

from reprod.runs import run_notebook, NotebookRunError
from reprod.core import read_json

ROOT = Path(__file__).resolve().parent.parent
FIGS = ('loss_landscape', 'hessian_ratio', 'attention_gradcam')


def _check_figures(out: Path):
    for name in FIGS:
        png, pdf = out/f'{name}.png', out/f'{name}.pdf'
        assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n' and png.stat().st_size > 5000, png
        assert pdf.read_bytes()[:5] == b'%PDF-' and b'CreationDate' not in pdf.read_bytes(), pdf   # byte-stable PDF


def _check_record(rec: dict, grid: int, hessian_grid: int):
    loss, ratio = np.array(rec['landscape']['loss']), np.array(rec['hessian']['ratio'])
    lmin, lmax = np.array(rec['hessian']['lmin']), np.array(rec['hessian']['lmax'])
    assert loss.shape == (grid, grid) and ratio.shape == (hessian_grid, hessian_grid)
    assert np.isfinite(loss).all() and (ratio >= 0).all()
    assert (lmax >= lmin).all() and (lmax > 0).all()               # the loss curves upwards somewhere at every point
    m = rec['metrics']
    # the grid's centre is the checkpoint itself: its loss lies inside the landscape's range
    assert m['landscape/min_loss'] <= m['landscape/center_loss'] <= m['landscape/max_loss']
    assert m['hessian/near_convex_share'] == pytest.approx(float((ratio <= 0.1).mean()))   # the share of grid points at ratio <= 0.1
    assert 0 < m['attention/prompt_share'] < 1                        # CLS attends to prompts, but not only to them


def test_figure_notebook_defaults(tmp_path, monkeypatch):
    "The CI default: no run_dir, a tiny model trained in the notebook, all figures and the record."
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv('REPROD_CACHE', str(tmp_path/'cache'))
    out = tmp_path/'fig'
    run_notebook('fig_vfpt_analysis', {'out_dir': str(out)})
    _check_figures(out)
    rec = read_json(out/'result.json')
    assert rec['status'] == 'done' and rec['config']['run_dir'] is None
    _check_record(rec, rec['config']['grid'], rec['config']['hessian_grid'])


def test_figure_notebook_on_a_vfpt_vtab_run(tmp_path, monkeypatch):
    "A vfpt_vtab smoke run's folder (adapter/ + result.json) reloads to the same model: same test accuracy as recorded."
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv('REPROD_CACHE', str(tmp_path/'cache'))
    run = tmp_path/'run'
    run_notebook('vfpt_vtab', {'out_dir': str(run), 'epochs': 2, 'image_size': 32, 'num_tokens': 2})
    out = tmp_path/'fig'
    run_notebook('fig_vfpt_analysis', {'out_dir': str(out), 'run_dir': str(run), 'grid': 3, 'hessian_grid': 2, 'hessian_iters': 2,
                                       'n_eval': 32, 'n_images': 2})
    _check_figures(out)
    rec, trained = read_json(out/'result.json'), read_json(run/'result.json')
    _check_record(rec, 3, 2)
    assert rec['metrics']['test/top1'] == pytest.approx(trained['metrics']['test/top1'], abs=1e-6)
    assert rec['metrics']['test/loss'] == pytest.approx(trained['metrics']['test/loss'], rel=1e-4)


def test_bad_run_dir_gives_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    with pytest.raises(NotebookRunError) as e:
        run_notebook('fig_vfpt_analysis', {'out_dir': str(tmp_path), 'run_dir': str(tmp_path/'missing')})
    assert 'no result.json' in str(e.value)
