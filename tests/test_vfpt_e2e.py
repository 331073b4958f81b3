"""VFPT end to end: the experiment notebook through papermill and the CLI, bad input, and a real EuroSAT VTAB-1k run."""
from pathlib import Path

import pytest

from reprod.cli import main
from conftest import notebook_error
from reprod.runs import run_notebook, NotebookRunError
from reprod.core import read_json

ROOT = Path(__file__).resolve().parent.parent


def test_vfpt_notebook_default_smoke_run(tmp_path, monkeypatch):
    "The main job: the notebook on its embedded defaults writes a result JSON and both figures."
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv('REPROD_CACHE', str(tmp_path/'cache'))
    out = tmp_path/'run'
    assert main(['run', 'vfpt_vtab', f'out_dir={out}', 'epochs=4']) == 0
    rec = read_json(out/'result.json')
    assert rec['status'] == 'done' and rec['config']['task'] == 'digits'
    m = rec['metrics']
    assert len(rec['history']) == 4 and rec['history'][-1]['test/top1'] == m['test/top1']    # the last epoch's evaluation
    correct = m['test/top1'] * m['test/n'] / 100
    assert m['test/n'] == 359 and abs(correct - round(correct)) < 1e-6                      # a share of the 359 test digits
    assert rec['model']['trainable'] > 0 and rec['timings']['steps'] == 4 * 16
    for f in ('training_curve.png', 'training_curve.pdf', 'prompt_spectrum.png', 'notebook.ipynb'):
        assert (out/f).stat().st_size > 0, f
    assert not list((ROOT/'nbs').glob('**/notebook.ipynb'))    # executed copies never land in nbs/


@pytest.mark.parametrize('params, needle', [
    ({'task': 'imagenet', 'data_root': '.'}, "unknown VTAB-1k task 'imagenet'"),
    ({'backbone': 'vit_nope'}, "backbone='vit_nope'"),
    ({'task': 'eurosat', 'data_root': '/nonexistent/vtab'}, "data_root='/nonexistent/vtab' is not a directory"),
    ({'fourier_percentage': 1.5}, 'fourier_percentage=1.5'),
    ({'num_tokens': 0}, 'num_tokens=0'),
])
def test_bad_input_gives_one_clear_error(tmp_path, params, needle):
    assert needle in notebook_error('vfpt_vtab', {**params, 'epochs': 1}, tmp_path)


def test_malformed_data_root(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    (tmp_path/'eurosat').mkdir(); (tmp_path/'eurosat'/'train800.txt').write_text('images/a.jpg\n')
    with pytest.raises(NotebookRunError) as e:
        run_notebook('vfpt_vtab', {'task': 'eurosat', 'data_root': str(tmp_path), 'epochs': 1, 'out_dir': str(tmp_path/'o')})
    assert 'train800.txt:1: malformed line' in str(e.value) or 'split list missing' in str(e.value)


def test_cli_rejects_unknown_parameter(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert main(['run', 'vfpt_vtab', 'epoch=3']) == 1
    assert "unknown parameter(s) ['epoch']" in capsys.readouterr().err


def test_cli_tasks_lists_vtab(capsys):
    assert main(['tasks']) == 0
    out = capsys.readouterr().out
    assert 'eurosat' in out and 'smallnorb_ele' in out and out.count('\n') >= 19


def test_real_eurosat_vtab1k_run_beats_chance(eurosat_vtab, tmp_path, monkeypatch):
    "VTAB-1k EuroSAT generated from ../shared/data, a small random ViT, a few epochs: clearly above the 10% chance level."
    from reprod import core, engine, models, vfpt
    from reprod.data import vtab
    monkeypatch.setenv('REPROD_CACHE', str(tmp_path/'cache'))
    root, tdir = eurosat_vtab
    assert [len(vtab.read_split(tdir, s)) for s in vtab.SPLITS] == [800, 200, 1000, 5400]
    core.seed_everything(0)
    data = vtab.load_vtab('eurosat', root, protocol='final', image_size=64, batch_size=64, eval_batch_size=500)
    model = vfpt.get_vfpt_model(models.create_backbone('vit_tiny_patch16_224', img_size=64),
                                vfpt.method_config('vfpt', data.num_classes, num_tokens=10, fourier_percentage=0.3))
    res = engine.fit(model, data.train, vfpt.vtab_recipe(1.0, 0.0, epochs=8, eval_every=8), data.eval, progress=False)   # test once, at the end
    acc = res.metrics['test/top1']
    print('EuroSAT VTAB-1k test top-1 (random-init vit_tiny, 8 epochs, 64px):', acc)
    assert res.metrics["test/n"] == 5400 and acc > 20.0, acc   # > 2x chance; measured 34.3
