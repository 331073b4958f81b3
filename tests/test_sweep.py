"""Sweeps end to end through the CLI: the VFPT VTAB-1k protocol on two tasks (the embedded digits task and EuroSAT
generated from ../shared/data), a 2×2 lr × wd grid and 2 seeds, killed midway with SIGKILL and resumed; the tables
with the paper column; a failing run reported with its error; the sweep figure notebook on its smoke default; two sweep
processes on one run directory at once (every run executed once); the Slurm path through submitit's local executor,
with a job killed midway and resubmitted."""
import json, os, signal, subprocess, sys, time
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


# ---------------------------------------------------------------- two sweep processes, one run directory

FAKE_CELLS = ("task = 'a'\nlr = 0.1\nweight_decay = 0.0\nprotocol = 'tune'\nseed = 0\nout_dir = '.'\nlog = ''",
              # no reprod import: a kernel of this notebook starts in a second; the log line is appended in one write
              "import json, os, time\nwith open(log, 'a') as f: f.write(f'{os.getpid()} {os.path.basename(out_dir)}\\n')\ntime.sleep(3)\n"
              "m = {'val200/top1': 100 * lr - weight_decay, 'test/top1': 10.0 + seed}\n"
              "tmp = os.path.join(out_dir, '.result.tmp')\njson.dump({'status': 'done', 'metrics': m}, open(tmp, 'w'))\n"
              "os.replace(tmp, os.path.join(out_dir, 'result.json'))")
DRIVER = '''import sys
from reprod import sweep
from reprod.cli import main
nb, log = sys.argv[1], sys.argv[2]
sweep.PROTOCOLS['fake'] = lambda tasks=('a', 'b'), seeds=(1, 2), params=None: sweep.SelectThenFinal(
    nb, {'log': log, **(params or {})}, tuple(seeds), tasks=tuple(tasks), lrs=(0.1, 0.2), wds=(0.0,))
sys.exit(main(sys.argv[3:]))
'''


def test_two_sweeps_at_once_run_every_run_once(tmp_path):
    "Two `reprod sweep run` processes started together on one run directory: 8 runs (4 grid + 4 final), each executed once."
    import nbformat
    nb = nbformat.v4.new_notebook(metadata={'kernelspec': {'name': 'python3', 'display_name': 'python3', 'language': 'python'}})
    nb.cells = [nbformat.v4.new_code_cell(FAKE_CELLS[0], metadata={'tags': ['parameters']}), nbformat.v4.new_code_cell(FAKE_CELLS[1])]
    nbformat.write(nb, tmp_path/'fake_vtab.ipynb'); (tmp_path/'driver.py').write_text(DRIVER)
    rd, log = tmp_path/'sweep', tmp_path/'executions.log'
    cmd = [sys.executable, str(tmp_path/'driver.py'), str(tmp_path/'fake_vtab.ipynb'), str(log), 'sweep', 'run', str(rd), 'fake', '--workers', '2']
    env = {**os.environ, 'REPROD_CACHE': str(tmp_path/'cache')}
    procs = [subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    executed = [l.split()[1] for l in log.read_text().splitlines()]
    assert len(executed) == 8 and len(set(executed)) == 8, sorted(executed)      # every run once: none twice, none missing
    runs = pd.read_csv(rd/'runs.csv')
    assert len(runs) == 8 and (runs.status == 'done').all(), runs
    owners = {json.loads((rd/'runs'/r/'run.json').read_text())['pid'] for r in runs.run_id}
    assert owners == {p.pid for p in procs}, owners                               # both processes shared the work
    for r in runs.run_id:                                                          # no mixed folders: each holds one run's files
        assert json.loads((rd/'runs'/r/'run.json').read_text())['run_id'] == r
        assert json.loads((rd/'runs'/r/'result.json').read_text())['status'] == 'done'


# ---------------------------------------------------------------- the cluster path, with submitit's local executor

def _wait(cond, timeout, p, log):
    t0 = time.time()
    while not cond() and p.poll() is None and time.time() - t0 < timeout: time.sleep(0.5)
    assert cond(), log.read_text()[-3000:]


def test_slurm_path_with_submitit_local_executor(tmp_path):
    """`reprod sweep run ... --slurm cluster=local`: the grid (2 runs) is one job array, the final stage a second one after
    it; a job killed midway leaves its run pending (with the job's error), holds back the final stage, and is resubmitted
    by the rerun; the tables are collected."""
    rd, env = tmp_path/'sweep', {**os.environ, 'REPROD_CACHE': str(tmp_path/'cache'), 'HF_HUB_OFFLINE': '1'}
    cmd = [REPROD, 'sweep', 'run', str(rd), 'vfpt_vtab', '--tasks', 'digits', '--lrs', '0.1,0.5', '--wds', '0', '--seeds', '1', *TINY,
           '--slurm', 'cluster=local', 'timeout_min=20']                       # --slurm takes the key=value options after it
    log = tmp_path/'first.log'
    with open(log, 'w') as f:
        p = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=f, stderr=subprocess.STDOUT)
        started = lambda: [json.loads(q.read_text()) for q in (rd/'runs').glob('*/run.json')] if (rd/'runs').exists() else []
        _wait(lambda: len(started()) == 2, 600, p, log)                       # both grid jobs are running
        victim = started()[0]
        assert victim['job_id'] and victim['pid'] != p.pid                     # run inside a submitit job, not the sweep process
        os.kill(victim['pid'], signal.SIGKILL)                                 # the job dies midway (preempted, OOM-killed, ...)
        assert p.wait(timeout=900) == 1, log.read_text()[-3000:]              # the sweep ends unfinished, and says so
    out = log.read_text()
    assert 'sweep round 1: 2 run(s) submitted as one job array (local' in out, out[-3000:]
    assert 'round 2' not in out                                                # no final stage while a grid run is unfinished
    runs = pd.read_csv(rd/'runs.csv').set_index('run_id')
    assert sorted(runs.status) == ['done', 'pending'] and 'ended without a result' in runs.loc[victim['run_id'], 'error'], runs
    assert f"pending {victim['run_id']}: job {victim['job_id']} ended without a result" in out
    survivor = next(r for r in runs.index if r != victim['run_id'])
    kept = (rd/'runs'/survivor/'result.json').stat().st_mtime_ns
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert 'sweep round 1: 1 run(s) submitted as one job array' in r.stdout       # only the killed run is resubmitted ...
    assert 'sweep round 2: 1 run(s) submitted as one job array' in r.stdout       # ... then the final stage, after the grid
    assert (rd/'runs'/survivor/'result.json').stat().st_mtime_ns == kept
    runs = pd.read_csv(rd/'runs.csv')
    assert len(runs) == 3 and (runs.status == 'done').all() and sorted(runs.stage) == ['final', 'tune', 'tune'], runs
    assert 'digits' in (rd/'results.md').read_text()
