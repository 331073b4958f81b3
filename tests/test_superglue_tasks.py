"""mept_superglue on every SuperGLUE task: each task trains 2 optimiser steps with a tiny random model through papermill and
reports its official metric; evaluation mode on a val-only folder reproduces the train run's test metrics; the errors
of the train/eval modes. CB/COPA/RTE are the real files in ../shared/data; BoolQ, MultiRC, ReCoRD, WiC and WSC (whose
full splits are not there) are small synthetic rows written in the official JSONL format.

All runs share one Jupyter kernel (papermill's `km=`): each run still executes every cell of the notebook with its own
injected parameters (every variable is assigned anew), but the ~6 s of kernel start and imports are paid once."""
import json
import os
import random
import shutil
from functools import lru_cache
from pathlib import Path

import pytest
from safetensors.torch import load_file

from reprod.core import read_json, shared_data_dir, eval_subset
from reprod.data import superglue as sg
from reprod.runs import notebook_path

ROOT = Path(__file__).resolve().parent.parent
OFFICIAL = {'boolq': ('acc',), 'cb': ('acc', 'f1'), 'copa': ('acc',), 'multirc': ('f1a', 'em'), 'record': ('f1', 'em'),
            'rte': ('acc',), 'wic': ('acc',), 'wsc': ('acc',)}
REAL = ('cb', 'copa', 'rte')
TINY = {'epochs': 1, 'max_steps': 2, 'max_eval': 8, 'max_length': 64, 'batch_size': 4, 'eval_batch_size': 16,
        'num_experts': 2, 'prompt_len': 4, 'seed': 3}


# ---- synthetic rows in the official SuperGLUE JSONL format -------------------------------------------------------
_NAMES = ['Anna', 'Ben', 'Carla', 'David', 'Emma', 'Felix', 'Grace', 'Hugo']
_WORDS = ['bank', 'bat', 'light', 'ring', 'match', 'spring']


def _span(text, s):
    i = text.index(s); return {'start': i, 'end': i + len(s) - 1}       # ReCoRD's `end` is inclusive


def synthetic_objects(task: str, n: int, seed: int) -> list[dict]:
    "n JSON objects of `task` in the official release format (MultiRC/ReCoRD: passage-level objects)."
    rng, out = random.Random(f'{task}-{seed}'), []
    for i in range(n):
        a, b, c = rng.sample(_NAMES, 3); w = rng.choice(_WORDS); yes = i % 2 == 0
        if task == 'boolq':
            out.append({'question': f'did {a} meet {b}', 'passage': f"{a} {'met' if yes else 'never met'} {b} in town.", 'idx': i, 'label': yes})
        elif task == 'wic':
            s1, s2 = f'The {w} was old.', f'He saw the {w} there.'
            out.append({'word': w, 'sentence1': s1, 'sentence2': s2, 'start1': s1.index(w), 'end1': s1.index(w) + len(w),
                        'start2': s2.index(w), 'end2': s2.index(w) + len(w), 'idx': i, 'label': yes, 'version': 1.1})
        elif task == 'wsc':
            text = f'{a} thanked {b} because she was kind .'
            out.append({'text': text, 'target': {'span1_index': 0 if yes else 2, 'span1_text': a if yes else b, 'span2_index': 4,
                                                  'span2_text': 'she'}, 'idx': i, 'label': not yes})
        elif task == 'multirc':
            text = f'{a} gave {b} a book. {c} was not there.'
            qs = [{'question': 'Who gave the book?', 'idx': 2 * i, 'answers': [{'text': a, 'idx': 4 * i, 'label': 1}, {'text': c, 'idx': 4 * i + 1, 'label': 0}]},
                  {'question': 'Who was absent?', 'idx': 2 * i + 1, 'answers': [{'text': c, 'idx': 4 * i + 2, 'label': 1}, {'text': b, 'idx': 4 * i + 3, 'label': int(yes)}]}]
            out.append({'idx': i, 'version': 1.1, 'passage': {'text': text, 'questions': qs}})
        elif task == 'record':
            text = f'{a} met {b} and {c} in Paris.\n@highlight\n{b} was happy'
            qas = [{'query': f'@placeholder met {b}.', 'idx': 2 * i, 'answers': [{**_span(text, a), 'text': a}]},
                   {'query': 'The meeting was in @placeholder.', 'idx': 2 * i + 1, 'answers': [{**_span(text, 'Paris'), 'text': 'Paris'}]}]
            out.append({'idx': i, 'source': 'synthetic', 'passage': {'text': text, 'entities': [_span(text, e) for e in (a, b, c, 'Paris')]},
                        'qas': qas[:1 + i % 2]})
        else: raise ValueError(task)
    return out


def write_task(root: Path, task: str, splits=(('train', 12), ('val', 6))) -> Path:
    d = root/sg.get_task(task).folder; d.mkdir(parents=True, exist_ok=True)
    for split, n in splits:
        (d/f'{split}.jsonl').write_text(''.join(json.dumps(o) + '\n' for o in synthetic_objects(task, n, {'train': 0, 'val': 1}[split])))
    return d


@pytest.fixture(scope='module')
def synth_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('sg')
    for t in set(OFFICIAL) - set(REAL): write_task(root, t)
    return root


def data_root_for(task, synth_root):
    if task not in REAL: return synth_root
    shared = shared_data_dir()
    if shared is None:
        if os.environ.get('CI', '').lower() == 'true': pytest.fail('../shared/data not available (required when CI=true)')
        pytest.skip('../shared/data not available')
    return shared/'superglue'


# ---- one kernel for every run -------------------------------------------------------------------------------------
class Runner:
    def __init__(self, out_root: Path):
        from jupyter_client.manager import KernelManager
        self.out_root, self.n = out_root, 0
        self.km = KernelManager(kernel_name='python3')
        self.km.start_kernel(cwd=str(ROOT), env={**os.environ, 'REPROD_PROGRESS': 'log', 'TQDM_MININTERVAL': '60'})

    def __call__(self, params: dict, name: str) -> Path:
        "Run mept_superglue with `params` in the shared kernel; the run folder."
        import papermill as pm
        out = self.out_root/name
        out.mkdir(parents=True, exist_ok=True)
        pm.execute_notebook(str(notebook_path('mept_superglue')), str(out/'notebook.ipynb'), parameters={**params, 'out_dir': str(out)},
                            kernel_name='python3', km=self.km, progress_bar=False, cwd=str(ROOT))
        return out

    def error(self, params: dict, name: str) -> str:
        "The one error message of a run that must fail (and leaves no result record)."
        import papermill as pm
        with pytest.raises(pm.PapermillExecutionError) as e: self(params, name)
        assert not (self.out_root/name/'result.json').exists()
        return str(e.value.evalue)


@pytest.fixture(scope='module')
def runner(tmp_path_factory):
    r = Runner(tmp_path_factory.mktemp('runs'))
    yield r
    r.km.shutdown_kernel(now=True)


@pytest.fixture(scope='module')
def train_run(runner, synth_root):
    "train_run(task, model) -> run folder of a 2-step train run (cached: the eval-mode tests reuse these runs)."
    @lru_cache(maxsize=None)
    def run(task, model='tiny-llama'):
        return runner({'task': task, 'data_root': str(data_root_for(task, synth_root)), 'model': model, **TINY}, f'{task}-{model}')
    return run


def test_synthetic_rows_parse_in_the_official_format(tmp_path):
    for t in set(OFFICIAL) - set(REAL):
        d = write_task(tmp_path, t)
        rows = sg.load_task(t, tmp_path)
        assert len(rows.test) == {'multirc': 24, 'record': 9}.get(t, 6), t     # MultiRC: 4 options per passage; ReCoRD: 1-2 queries
        assert d.name == sg.get_task(t).folder


@pytest.mark.parametrize('task, model', [(t, 'tiny-llama') for t in OFFICIAL] + [('record', 'tiny-t5')])
def test_every_task_trains_and_reports_its_official_metric(train_run, synth_root, task, model):
    out = train_run(task, model)
    rec = read_json(out/'result.json'); m = rec['metrics']
    assert rec['status'] == 'done' and rec['config']['task'] == task and rec['model']['form'] == ('t2t' if model == 'tiny-t5' else 'cls')
    assert rec['timings']['steps'] == 2
    for k in OFFICIAL[task] + ('score',):
        assert 0.0 <= m[f'test/{k}'] <= 1.0, (task, k, m)
    data = sg.load_task(task, data_root_for(task, synth_root))
    test_rows = [data.test[i] for i in eval_subset(len(data.test), TINY['max_eval']).tolist()]
    assert m['test/n'] == len(test_rows) == min(8, len(data.test))        # ReCoRD: queries, not (query, candidate) pairs
    meta, r = read_json(out/'routing.json'), load_file(out/'routing.safetensors')
    if task != 'record':
        assert meta['unit'] == 'row' and r['labels'].tolist() == [x['label'] for x in test_rows]
        return
    assert 'test/majority_score' not in m and 'test/acc' not in m
    if model == 'tiny-t5':                                                # one encoder pass (= one router input) per query
        assert meta['unit'] == 'query' and meta['n'] == len(test_rows) and r['experts'].shape[0] == len(test_rows)
        return
    # decoder: one router input per (query, candidate) pair; the chosen candidates rebuild the reported F1 / EM
    pairs = [(i, e) for i, x in enumerate(test_rows) for e in x['entities']]
    assert meta['unit'] == 'pair' and r['experts'].shape[0] == len(pairs) == meta['n']
    assert r['labels'].tolist() == [int(e in test_rows[i]['answers']) for i, e in pairs]
    chosen = {}
    for (i, e), p in zip(pairs, r['preds'].tolist()):
        if p: assert i not in chosen; chosen[i] = e                       # exactly one candidate chosen per query
    got = sg.score_rows('record', test_rows, [chosen[i] for i in range(len(test_rows))])
    assert (m['test/f1'], m['test/em']) == pytest.approx((got['f1'], got['em']))


@pytest.mark.parametrize('task, model', [('cb', 'tiny-llama'), ('record', 'tiny-t5'), ('record', 'tiny-llama')])
def test_eval_mode_on_a_val_only_folder_reproduces_the_train_runs_test_metrics(train_run, runner, synth_root, tmp_path, task, model):
    trained = train_run(task, model)
    src = sg.task_dir(task, data_root_for(task, synth_root))[0]
    (tmp_path/src.name).mkdir(); shutil.copy(src/'val.jsonl', tmp_path/src.name/'val.jsonl')   # only the validation file
    out = runner({'task': task, 'data_root': str(tmp_path), 'model': model, 'mode': 'eval', 'adapter': str(trained/'adapter'),
                  **{k: TINY[k] for k in ('max_eval', 'max_length', 'eval_batch_size', 'seed')}}, f'eval-{task}-{model}')
    rec, ref = read_json(out/'result.json'), read_json(trained/'result.json')
    assert rec['config']['mode'] == 'eval' and rec['history'] == [] and rec['data']['train'] == 0 and not (out/'adapter').exists()
    assert rec['config']['num_experts'] == 2 and rec['config']['prompt_len'] == 4      # from the adapter, not the defaults (4, 10)
    assert rec['model']['trainable'] == ref['model']['trainable']
    want = {k: v for k, v in ref['metrics'].items() if k.startswith('test/') and 'majority' not in k}
    got = {k: v for k, v in rec['metrics'].items() if k.startswith('test/')}
    assert got == want and len(got) >= 4                             # bitwise: the same rows, weights and arithmetic
    assert load_file(out/'routing.safetensors')['experts'].tolist() == load_file(trained/'routing.safetensors')['experts'].tolist()


def test_mode_errors_name_the_problem(train_run, runner, synth_root, tmp_path):
    (tmp_path/'BoolQ').mkdir(); shutil.copy(synth_root/'BoolQ'/'val.jsonl', tmp_path/'BoolQ'/'val.jsonl')
    base = {'data_root': str(tmp_path), **TINY}
    msg = runner.error({**base, 'task': 'boolq'}, 'e1')
    assert f"{tmp_path/'BoolQ'/'train.jsonl'} not found; this folder has only val.jsonl: pass mode='eval'" in msg, msg
    (tmp_path/'WiC').mkdir(); shutil.copy(synth_root/'WiC'/'train.jsonl', tmp_path/'WiC'/'train.jsonl')
    msg = runner.error({**base, 'task': 'wic'}, 'e2')
    assert f"{tmp_path/'WiC'/'val.jsonl'} not found (the official validation split (MEPT's test split), needed in mode='train')" in msg, msg
    msg = runner.error({**base, 'task': 'wic', 'mode': 'eval', 'adapter': str(tmp_path)}, 'e3')
    assert "val.jsonl not found (the official validation split (MEPT's test split), needed in mode='eval'); this folder has only train.jsonl" in msg, msg
    assert "mode='eval' needs adapter=" in runner.error({**base, 'task': 'boolq', 'mode': 'eval'}, 'e4')
    assert "mode='predict': expected 'train'" in runner.error({**base, 'task': 'boolq', 'mode': 'predict'}, 'e5')
    assert "is read only in mode='eval'" in runner.error({**base, 'task': 'boolq', 'adapter': str(tmp_path)}, 'e6')
    assert f"adapter='{tmp_path/'none'}': expected the adapter/ folder" in runner.error(
        {**base, 'task': 'boolq', 'mode': 'eval', 'adapter': str(tmp_path/'none')}, 'e7')
    cb = train_run('cb')                                   # an adapter trained on CB does not evaluate BoolQ
    msg = runner.error({**base, 'task': 'boolq', 'mode': 'eval', 'adapter': str(cb/'adapter')}, 'e8')
    assert "was trained with task='cb'; this run has task='boolq'" in msg, msg
