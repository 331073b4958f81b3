"""Sweeps end to end through the CLI: the VFPT VTAB-1k protocol on two tasks (the embedded digits task and EuroSAT
generated from ../shared/data), a 2×2 lr × wd grid and 2 seeds, killed midway with SIGKILL and resumed; the tables
with the paper column; a failing run reported with its error; the sweep figure notebook on its smoke default."""
import os, signal, subprocess, sys, time
from pathlib import Path

import pandas as pd

from reprod.cli import main
from reprod.runs import run_notebook
from reprod.data.vtab import make_digits_task

ROOT = Path(__file__).resolve().parent.parent
REPROD = str(Path(sys.executable).parent/'reprod')
TINY = ['epochs=2', 'image_size=32', 'batch_size=64', 'max_eval=300', 'save_adapter=False']   # epoch 0 trains at lr 0 (10% warm-up, per-epoch schedule), so 2 epochs is the least that learns


def _done(rd):
    return {p: p.stat().st_mtime_ns for p in (rd/'runs').glob('*/result.json')}


def test_vfpt_sweep_killed_midway_resumes_without_redoing_runs(eurosat_vtab, tmp_path):
    root, _ = eurosat_vtab
    if not (root/'digits').exists(): make_digits_task(root/'digits')
    rd, env = tmp_path/'sweep', {**os.environ, 'REPROD_CACHE': str(tmp_path/'cache'), 'HF_HUB_OFFLINE': '1'}
    cmd = [REPROD, 'sweep', 'run', str(rd), 'vfpt_vtab', '--tasks', 'digits,eurosat', '--lrs', '0.1,0.5', '--wds', '0,0.001',
           '--seeds', '1,2', '--workers', '2', f'data_root={root}', *TINY]
    with open(tmp_path/'first.log', 'w') as log:
        p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        t0 = time.time()
        while len(_done(rd)) < 3 and p.poll() is None and time.time() - t0 < 900: time.sleep(0.5)
        assert p.poll() is None, (tmp_path/'first.log').read_text()[-3000:]
        os.killpg(p.pid, signal.SIGKILL); p.wait()
    time.sleep(3)                       # orphaned kernels notice their parent is gone and exit
    before = _done(rd)
    assert 3 <= len(before) < 12, len(before)
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    after = _done(rd)
    assert len(after) == 12                                          # 2 tasks × (4 grid + 2 seeds): none lost
    assert all(after[k] == v for k, v in before.items())             # none done twice
    runs = pd.read_csv(rd/'runs.csv')
    assert len(runs) == 12 and (runs.status == 'done').all()
    assert sorted(runs.stage.value_counts().items()) == [('final', 4), ('tune', 8)]
    fin = runs[runs.stage == 'final']
    for t in ('digits', 'eurosat'):                                   # finals use the grid's best validation run
        tune = runs[(runs.stage == 'tune') & (runs.task == t)].sort_values(['val200/top1', 'lr', 'wd'], ascending=[False, True, True])
        assert set(fin[fin.task == t].lr) == {tune.lr.iloc[0]} and set(fin[fin.task == t].wd) == {tune.wd.iloc[0]}
    res = pd.read_csv(rd/'results.csv')
    assert {'task', 'paper', 'diff'} <= set(res.columns), res.columns
    eu = res[res.task == 'eurosat'].iloc[0]
    assert eu.paper > 90 and abs(eu['diff'] - (eu.ours_mean - eu.paper)) < 1e-6    # the paper's VFPT EuroSAT number
    assert 'eurosat' in (rd/'results.md').read_text() and (rd/'runs.md').read_text().count('| done |') == 12
    assert main(['sweep', 'status', str(rd)]) == 0


def test_failed_run_is_reported_with_its_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT); monkeypatch.setenv('REPROD_CACHE', str(tmp_path/'cache'))
    rd = tmp_path/'bad'
    assert main(['sweep', 'run', str(rd), 'vfpt_vtab', '--tasks', 'digits', '--lrs', '0.1', '--wds', '0', '--seeds', '1',
                 *TINY, 'fourier_percentage=1.5']) == 1
    assert 'fourier_percentage=1.5' in capsys.readouterr().out
    runs = pd.read_csv(rd/'runs.csv')
    assert list(runs.status) == ['failed'] and runs.error.str.contains('fourier_percentage=1.5').all()
    assert '| failed |' in (rd/'runs.md').read_text()


def test_sweep_figure_notebook_on_its_smoke_default(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT); monkeypatch.setenv('REPROD_CACHE', str(tmp_path/'cache'))
    run_notebook('fig_vfpt_sweep', {'out_dir': str(tmp_path/'figs')})
    for f in ('fig2_accuracy_vs_fourier_percentage', 'figS1_alpha_length_heatmap'):
        for ext in ('png', 'pdf'): assert (tmp_path/'figs'/f'{f}.{ext}').stat().st_size > 1000, f
