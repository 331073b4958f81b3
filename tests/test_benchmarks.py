"""The benchmarks' code paths run in CI at toy sizes: `gpu_paper_scale.py --dry-run` writes its JSON and Markdown, and the
VTAB-1k projection is the protocol's arithmetic. (Benchmarks print ratios against a baseline measured in the same run;
these tests check that the code runs and reports, not how fast it is.)"""
import importlib.util, json, math, os, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load(name):
    spec = importlib.util.spec_from_file_location(f'bench_{name}', ROOT/'benchmarks'/f'{name}.py')
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope='module')
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp('gps')
    env = {**os.environ, 'HF_HUB_OFFLINE': '1', 'OMP_NUM_THREADS': '1', 'CUDA_VISIBLE_DEVICES': ''}
    p = subprocess.run([sys.executable, str(ROOT/'benchmarks'/'gpu_paper_scale.py'), '--dry-run', '--out', str(out)],
                       capture_output=True, text=True, env=env, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    return out, json.loads((out/'gpu_paper_scale.json').read_text()), (out/'gpu_paper_scale.md').read_text()


def test_dry_run_reports_every_measurement(dry_run):
    _, res, _ = dry_run
    assert res['dry_run'] is True and res['device'].startswith('cpu')
    pos = lambda x: isinstance(x, float) and math.isfinite(x) and x > 0
    for m in ('vpt_deep', 'vfpt'):
        v = res['vit'][m]
        assert all(pos(v[k]) for k in ('s_per_step', 'images_per_s', 'eval_images_per_s')), v
        assert 0 < v['trainable'] < v['total_params']                  # the backbone is frozen
    assert pos(res['vit']['ratio_vfpt_vpt'])
    assert res['vit']['vfpt']['trainable'] == res['vit']['vpt_deep']['trainable']   # VFPT adds no parameters to VPT-deep
    for m in ('prompt_tuning', 'mept'): assert pos(res['t5'][m]['s_per_step'])
    assert res['t5']['mept']['trainable'] > res['t5']['prompt_tuning']['trainable']
    assert pos(res['t5']['ratio_mept_pt'])
    p = res['pta']
    assert pos(p['plain_tokens_per_s']) and pos(p['topk_tokens_per_s'])
    assert set(p['ot_positions_per_s']) == {'default/cpu', 'faithful/cpu'} and all(map(pos, p['ot_positions_per_s'].values()))
    proj = res['vtab_projection']['vfpt']
    assert [x['eval_every'] for x in proj] == [1, 100] and proj[0]['total_h'] > proj[1]['total_h']


def test_dry_run_markdown_has_each_section(dry_run):
    _, res, md = dry_run
    assert md.startswith('# Paper-scale throughput (DRY RUN')
    for s in ('## VFPT vs VPT-deep', 'Projected VTAB-1k protocol', '## MEPT vs prompt tuning', '## PTA-LLM top-k extraction', 'OT alignment'):
        assert s in md, s
    assert f"{res['vit']['ratio_vfpt_vpt']:.3f}" in md


def test_vtab_projection_is_the_protocol_arithmetic():
    gps = _load('gpu_paper_scale')
    m = dict(s_per_step=0.1, eval_images_per_s=1000.0)
    pr = gps.vtab_projection(m, batch=64, eval_every=100)
    # 19 tasks x 40 configs x ceil(800/64)=13 steps x 100 epochs at 0.1 s; 19 x 5 seeds x ceil(1000/64)=16 steps x 100 epochs
    assert math.isclose(pr['tune_train_h'], 19 * 40 * 13 * 100 * 0.1 / 3600)
    assert math.isclose(pr['final_train_h'], 19 * 5 * 16 * 100 * 0.1 / 3600)
    assert math.isclose(pr['tune_eval_h'], 19 * 40 * 200 / 1000 / 3600)               # one val200 pass per run
    assert math.isclose(pr['final_eval_h'], 5 * sum(gps.VTAB_TEST_SIZES.values()) / 1000 / 3600)
    assert math.isclose(gps.vtab_projection(m, 64, 1)['tune_eval_h'], 100 * pr['tune_eval_h'])   # every epoch: 100 passes
    from reprod.data.vtab import VTAB_TASKS
    assert set(gps.VTAB_TEST_SIZES) == set(VTAB_TASKS)                                  # one size per task, same names


def test_unknown_part_is_a_clear_error(tmp_path):
    p = subprocess.run([sys.executable, str(ROOT/'benchmarks'/'gpu_paper_scale.py'), '--dry-run', '--only', 'vit,swin', '--out', str(tmp_path)],
                       capture_output=True, text=True, env={**os.environ, 'HF_HUB_OFFLINE': '1'}, timeout=120)
    assert p.returncode != 0 and "--only: unknown part(s) ['swin']" in p.stderr


@pytest.mark.parametrize('kind', ['prompt_tuning', 'ptuning_v2'])
def test_peft_pairs_compute_the_same_loss(kind):
    "reprod's prompt tuning / P-tuning v2 and PEFT's prompt / prefix tuning, set to the same weights, give the same loss and gradient step."
    pytest.importorskip('peft')
    import torch
    from reprod import engine, models
    bench = _load('peft_prompt_tuning')
    base = models.tiny_lm('llama', 'cls', vocab_size=40, hidden=32, layers=2, num_labels=3, pad_token_id=0)
    g = torch.Generator().manual_seed(0)
    batch = {'input_ids': torch.randint(1, 40, (3, 9), generator=g), 'attention_mask': torch.ones(3, 9, dtype=torch.long),
             'labels': torch.tensor([0, 2, 1])}
    ours, theirs = bench.pair(kind, base, 4)
    losses = []
    for m, is_peft in ((ours, False), (theirs, True)):
        opt = engine.build_optimizer(bench.trainable(m), engine.Recipe(optimizer='adamw', lr=0.01))
        l1 = bench.loss_of(m, batch, is_peft); l1.backward(); opt.step(); opt.zero_grad()
        losses.append((l1.item(), bench.loss_of(m, batch, is_peft).item()))
    assert abs(losses[0][0] - losses[1][0]) <= 1e-6, losses
    assert abs(losses[0][1] - losses[1][1]) <= 1e-5, losses        # after one identical AdamW step
    assert losses[0][1] != losses[0][0]                              # the step did change the model


def test_pta_gate_share_on_tiny_stores(tmp_path, capsys):
    "benchmarks/pta_gate_share.py on two tiny models' real top-k stores: the three comparisons and the ratio are reported."
    from reprod.data.text import embedded_corpus
    from reprod.models import create_lm
    from reprod.pta.logits import TopKConfig, extract_topk
    docs = [d[:150] for d in embedded_corpus()]
    for name, folder in (('tiny-bpe', 'src'), ('tiny-sp', 'tgt')):
        model, tok = create_lm(name)
        extract_topk(model, tok, docs, tmp_path/folder, TopKConfig(k=10, shard_size=4), progress=False)
    _load('pta_gate_share').main(['--source', 'tiny-bpe', '--target', 'tiny-sp', '--source-store', str(tmp_path/'src'),
                                  '--target-store', str(tmp_path/'tgt')])
    out = capsys.readouterr().out
    for row in ('| raw strings |', '| faithful=True |', '| decoded text (default) |', 'RATIO gate failures decoded / raw'): assert row in out, out
