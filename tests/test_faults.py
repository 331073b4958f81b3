"""Faults and bad input, each asserting the message a user sees: corrupt, truncated and missing images in VTAB-1k and
FGVC folders; a result.json cut short; a full disk or a permission error while a sweep writes; a sweep resumed after its
settings or its notebook's parameters changed. The sweep cases use a stand-in for papermill (no kernel, seconds)."""
import errno, json, shutil
from pathlib import Path

import nbformat
import numpy as np
import pytest
from PIL import Image

from reprod import sweep
from reprod.cli import main
from reprod.data import fgvc, vtab

GRID = dict(tasks=('a', 'b'), lrs=(0.1, 0.2), wds=(0.0,), seeds=(1,))   # 4 tune runs, then 2 finals


# ---------------------------------------------------------------- images

def _truncate(p: Path):
    "A download cut short: a real image (noise, so it has data to lose) with its second half missing."
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(p, format='PNG')
    p.write_bytes(p.read_bytes()[:p.stat().st_size // 2])


def _class_folders(src: Path, n: int = 12) -> Path:
    for c in range(2):
        (src/f'c{c}').mkdir(parents=True)
        for i in range(n): Image.new('RGB', (24, 24), (100 * c, 10 * i, 0)).save(src/f'c{c}'/f'{i}.png')
    return src


@pytest.fixture
def vtab_task(tmp_path, monkeypatch):
    "A small task folder in the VTAB-1k layout (train800/val200/... lists), as `reprod data vtab` writes it."
    monkeypatch.setenv('REPROD_CACHE', str(tmp_path/'cache'))
    root = tmp_path/'vtab'
    vtab.make_vtab_layout(_class_folders(tmp_path/'src'), root/'tiny', seed=0, n_train=8, n_val=4)
    return root, root/'tiny'


def _cached(tmp_path) -> list[str]:
    "Names of the decoded-image cache files written so far."
    return sorted(p.name for p in (tmp_path/'cache'/'images').glob('*')) if (tmp_path/'cache'/'images').exists() else []


@pytest.mark.parametrize('damage,why', [('truncated', 'image file is truncated'), ('not_an_image', 'cannot identify image file')])
def test_vtab_corrupt_image_is_one_error_naming_it(vtab_task, tmp_path, damage, why):
    root, tdir = vtab_task
    rel = vtab.read_split(tdir, 'train800')[5][0]
    if damage == 'truncated': _truncate(tdir/rel)
    else: (tdir/rel).write_text('<html>404 not found</html>')
    with pytest.raises(ValueError) as e: vtab.load_vtab('tiny', root, 'tune', image_size=16)
    assert str(tdir/rel) in str(e.value) and 'not a readable image' in str(e.value) and why in str(e.value), e.value
    assert _cached(tmp_path) == []                             # nothing half-written: no cached tensor (nor temp file) of the split


def test_vtab_list_naming_a_missing_image(vtab_task, tmp_path):
    root, tdir = vtab_task
    rel = vtab.read_split(tdir, 'val200')[0][0]; (tdir/rel).unlink()
    with pytest.raises(FileNotFoundError) as e: vtab.load_vtab('tiny', root, 'tune', image_size=16)
    assert f"{tdir/'val200'}.txt names 1 missing image(s), e.g. {tdir/rel}" in str(e.value), e.value
    assert not [n for n in _cached(tmp_path) if 'val200' in n], _cached(tmp_path)   # only the intact train split is cached


@pytest.fixture
def fgvc_task(tmp_path):
    return fgvc.make_fgvc_layout(_class_folders(tmp_path/'fgvc'/'birds'))


def test_fgvc_corrupt_image_is_one_error_naming_it(fgvc_task):
    rel = next(iter(json.loads((fgvc_task/'train.json').read_text())))
    _truncate(fgvc_task/rel)
    data = fgvc.load_fgvc('birds', fgvc_task.parent, 'tune', image_size=32, batch_size=64, num_workers=0)
    with pytest.raises(ValueError) as e: next(iter(data.train))
    assert str(fgvc_task/rel) in str(e.value) and 'not a readable image (OSError: image file is truncated)' in str(e.value), e.value


def test_fgvc_split_naming_a_missing_image(fgvc_task):
    rel = next(iter(json.loads((fgvc_task/'test.json').read_text())))
    (fgvc_task/rel).unlink()
    with pytest.raises(FileNotFoundError) as e: fgvc.load_fgvc('birds', fgvc_task.parent, 'final', image_size=32, num_workers=0)
    assert f"{fgvc_task/'test'}.json names a missing image, e.g. {fgvc_task/rel}" in str(e.value), e.value


# ---------------------------------------------------------------- sweeps

@pytest.fixture
def fake_sweep(tmp_path, monkeypatch):
    "A protocol 'fake' over a stand-in notebook (its parameters cell is real: papermill inspects it) and a stand-in runner."
    nb = nbformat.v4.new_notebook(metadata={'kernelspec': {'name': 'python3', 'display_name': 'python3', 'language': 'python'}})
    nb.cells = [nbformat.v4.new_code_cell("task = 'a'\nlr = 0.1\nweight_decay = 0.0\nprotocol = 'tune'\nseed = 0\nout_dir = '.'",
                                          metadata={'tags': ['parameters']})]
    path = tmp_path/'fake_vtab.ipynb'; nbformat.write(nb, path)
    monkeypatch.setitem(sweep.PROTOCOLS, 'fake', lambda **kw: sweep.SelectThenFinal(str(path), {}, **{**GRID, **kw}))
    calls, faults = [], {}                 # faults: (task, lr, protocol) -> exception the "notebook" raises

    def runner(name, params, out_dir=None, log_output=False):
        key = (params['task'], params['lr'], params['protocol']); calls.append(key)
        if key in faults: raise faults[key]
        m = {'val200/top1': 100 * params['lr'], 'test/top1': 10.0 + params['seed']}
        sweep.atomic_write_json(Path(out_dir)/'result.json', {'status': 'done', 'metrics': m})
    monkeypatch.setattr(sweep, 'run_notebook', runner)
    return tmp_path/'sw', path, calls, faults


def _results(rd):
    return {p.parent.name: p.stat().st_mtime_ns for p in (rd/'runs').glob('*/result.json')}


def test_result_json_cut_short_is_rerun(fake_sweep):
    rd, _, calls, _ = fake_sweep
    assert (sweep.run_sweep(rd, 'fake', progress=False).status == 'done').all()
    before = _results(rd); victim = sorted(before)[0]
    p = rd/'runs'/victim/'result.json'; p.write_text(p.read_text()[:25])     # a writer killed mid-write
    st = sweep.status(rd).set_index('run_id')
    assert st.loc[victim, 'status'] == 'pending' and 'malformed JSON' in st.loc[victim, 'error'] and 'rerun' in st.loc[victim, 'error']
    calls.clear()
    runs = sweep.run_sweep(rd, progress=False)
    assert (runs.status == 'done').all() and len(calls) == 1                  # only the damaged run ran again
    after = _results(rd)
    assert after[victim] != before[victim] and json.loads(p.read_text())['status'] == 'done'
    assert {k: v for k, v in after.items() if k != victim} == {k: v for k, v in before.items() if k != victim}


@pytest.mark.parametrize('exc', [OSError(errno.ENOSPC, 'No space left on device'), PermissionError(errno.EACCES, 'Permission denied')],
                         ids=['disk_full', 'permission'])
def test_write_fault_fails_that_run_only(fake_sweep, exc):
    rd, _, calls, faults = fake_sweep
    faults[('b', 0.2, 'tune')] = exc
    runs = sweep.run_sweep(rd, 'fake', progress=False)
    bad = runs[(runs.task == 'b') & (runs.lr == 0.2)]
    assert list(bad.status) == ['failed'] and exc.strerror in bad.error.iloc[0], bad.error.iloc[0]
    ok = runs.drop(bad.index)
    assert (ok.status == 'done').all() and len(ok) == 5                      # task a: grid + final; task b: the other lr + its final
    assert json.loads((rd/'runs'/bad.run_id.iloc[0]/'error.json').read_text())['error'].startswith(type(exc).__name__)
    before = _results(rd)
    faults.clear(); calls.clear()                                             # the disk has room again
    runs = sweep.run_sweep(rd, progress=False)
    assert (runs.status == 'done').all() and calls == [('b', 0.2, 'tune'), ('b', 0.2, 'final')]   # the failed run, then the final it now wins
    assert all(_results(rd)[k] == v for k, v in before.items())               # nothing finished was lost or redone


def test_disk_full_even_for_error_json(fake_sweep, monkeypatch):
    "When not even error.json can be written, the run still shows as failed with both errors, and the others finish."
    rd, _, _, faults = fake_sweep
    full = OSError(errno.ENOSPC, 'No space left on device')
    faults[('a', 0.1, 'tune')] = full
    real = sweep.atomic_write_json
    def write(p, obj, **kw):
        if Path(p).name == 'error.json': raise full
        return real(p, obj, **kw)
    monkeypatch.setattr(sweep, 'atomic_write_json', write)
    runs = sweep.run_sweep(rd, 'fake', progress=False)
    bad = runs[(runs.task == 'a') & (runs.lr == 0.1)]
    assert list(bad.status) == ['failed'], runs
    assert 'No space left on device' in bad.error.iloc[0] and 'error.json could not be written' in bad.error.iloc[0], bad.error.iloc[0]
    assert (runs.drop(bad.index).status == 'done').all()
    assert not list(rd.rglob('.*.tmp'))                                      # no half-written temp files left


def test_resume_with_other_settings_says_what_differs(fake_sweep, capsys):
    rd, _, _, _ = fake_sweep
    assert main(['sweep', 'run', str(rd), 'fake', '--lrs', '0.1,0.2']) == 0
    capsys.readouterr()
    assert main(['sweep', 'run', str(rd), 'fake', '--lrs', '0.5']) == 1
    err = capsys.readouterr().err
    assert 'already holds a different sweep' in err and 'lrs: [0.1, 0.2] -> [0.5]' in err, err
    assert f'`reprod sweep run {rd}`' in err and 'start a new run directory' in err, err


def test_resume_after_notebook_parameters_changed(fake_sweep, capsys):
    rd, path, calls, _ = fake_sweep
    assert main(['sweep', 'run', str(rd), 'fake']) == 0
    nb = nbformat.read(path, as_version=4)
    nb.cells[0].source = nb.cells[0].source.replace('weight_decay = 0.0', 'weight_decay = 0.01') + '\nepochs = 3'
    nbformat.write(nb, path)
    calls.clear(); capsys.readouterr()
    assert main(['sweep', 'run', str(rd)]) == 1 and not calls              # refused before anything runs
    err = capsys.readouterr().err
    assert 'changed its parameters since the sweep' in err and "weight_decay: '0.0' -> '0.01'" in err and "epochs: not set -> '3'" in err, err
    assert 'start a new run directory' in err and 'reprod sweep run NEW_DIR fake' in err, err
    assert main(['sweep', 'status', str(rd)]) == 0                          # the finished sweep can still be inspected
    shutil.rmtree(rd)
    assert main(['sweep', 'run', str(rd), 'fake']) == 0                     # a new run directory runs the changed notebook
