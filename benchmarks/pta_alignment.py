"""PTA token pairing + probabilistic alignment: throughput of `reprod.pta` vs a plain Python reference of the same algorithm.

    python benchmarks/pta_alignment.py                      # 2 real 2048-token WikiText docs, SmolLM2 -> Gemma-3-270m, real top-10
    python benchmarks/pta_alignment.py --docs 4 --ref-docs 2 --synthetic   # random top-10 instead of running the two models
    python benchmarks/pta_alignment.py --device cuda        # OT on the GPU
    python benchmarks/pta_alignment.py --released ~/PTA-LLM --ref-docs 1   # also time the released code itself (a checkout of it)

The reference (`ref_align_doc`) is written from a description of the released per-position loop:
Python DTW over a Python list matrix with one compiled edit-distance call per cell (as the official code calls `editdistance`),
Python loops over positions, and the repo's Sinkhorn on 10x10 numpy arrays. `reprod` runs `AlignConfig(faithful=True)` so both
compute the same thing; every position's {target id: value} must agree (ids exactly, values to 1e-9 relative).
Also reported: the default (paper-intent) configuration's throughput and the memory of the teacher tensors per sequence:
dense [T, V] (as the official collator builds) vs sparse [T, K] ids + probs.

With `--released PATH` (the root of a checkout of github.com/runtsang/PTA-LLM; never copied into this project), the released
`src.utils.others.transform_step_logits_ot` is imported from PATH at run time and run on the same documents and top-k
(soft vocabulary alignment with reprod's vocabulary map, window 10, epsilon 1e-5, as its `token_alignment_ot.py` calls it);
its outputs must equal reprod's faithful ones and the speedup over it is printed (target >= 200x). It needs the released
code's own dependency `editdistance` (and scipy). Its tokenizer-class -> word-marker table predates the transformers 5
tokenizer classes, so the two tokenizers' classes are registered in it with the markers reprod detects.
"""
import argparse, math, os, resource, sys, time
from pathlib import Path

import numpy as np
import torch
from rapidfuzz.distance import Levenshtein

os.environ.setdefault('HF_HUB_OFFLINE', '1')


# ----------------------------------------------------------------------------------------------------------------------
# Plain reference of the released algorithm, written from its description (not its code); also used by tests/test_pta_align.py
# ----------------------------------------------------------------------------------------------------------------------
def ref_dtw(src, tgt, dist):
    "Official-style DTW: full matrix with inf borders, backtrack taking argmin over (diag, source-1, target-1), first on ties."
    L, N = len(src), len(tgt)
    INF = math.inf
    D = [[INF] * (N + 1) for _ in range(L + 1)]
    D[0][0] = 0.
    for a in range(L):
        Da, Dn, sa = D[a], D[a + 1], src[a]
        for b in range(N):
            Dn[b + 1] = dist(sa, tgt[b]) + min(Da[b + 1], Dn[b], Da[b])
    i, j = L - 1, N - 1
    tgt_to_src = [[] for _ in range(N)]
    while i > 0 or j > 0:
        tgt_to_src[j].append(i)
        opts = [D[i][j] if i > 0 and j > 0 else INF, D[i][j + 1] if i > 0 else INF, D[i + 1][j] if j > 0 else INF]
        mv = opts.index(min(opts))
        if mv == 0: i, j = i - 1, j - 1
        elif mv == 1: i -= 1
        else: j -= 1
    tgt_to_src[0].append(0)
    return [lst[::-1] for lst in tgt_to_src]


def ref_sinkhorn(M, r, c, lam, eps):
    "The released Sinkhorn loop, numpy on one problem, with a large safety cap."
    P = np.exp(-lam * M); P /= P.sum(); u = np.zeros(len(r))
    it = 0
    while np.max(np.abs(u - P.sum(1))) > eps and it < 10_000:
        u = P.sum(1); u[u < 1e-10] = 1e-10; P *= (r / u)[:, None]
        v = P.sum(0); v[v < 1e-10] = 1e-10; P *= (c / v)[None, :]
        it += 1
    return P


def _softmax(x):
    x = np.asarray(x, np.float64); e = np.exp(x - x.max()); return e / e.sum()


def ref_align_doc(str_map, tgt_vocab, src_tokens, tgt_tokens, sm, tm, s_in, t_in, s_top, s_log, t_top, t_log, window=10, eps=1e-5):
    """Per target position a dict {target id: value} (values before the collator's softmax), as the released code computes it
    (soft vocab alignment, OT when >= window distinct mapped ids, one-hot at the current target token otherwise)."""
    s_str = [src_tokens[i] for i in s_in]; t_str = [tgt_tokens[i] for i in t_in]
    dist = lambda a, b: Levenshtein.distance(a.replace(sm, ''), b.replace(tm, ''))
    b2s = ref_dtw(s_str, t_str, dist)
    out = []
    for i, js in enumerate(b2s):
        base = t_str[i]
        if len(js) != 1:
            out.append({tgt_vocab[base]: 1.0}); continue
        j = js[0]
        blend = s_str[j].replace(sm, tm)
        if sm == 'Ġ' and i == 0 and base.startswith(tm) and not blend.startswith(tm): blend = tm + blend
        if not (base == blend or (blend in str_map and str_map[blend] == base)):
            out.append({tgt_vocab[base]: 1.0}); continue
        ids, vals = [], []
        for lg, sid in zip(s_log[j], s_top[j]):
            t = str_map[src_tokens[sid].replace(sm, tm)]
            tid = tgt_vocab[t]
            if tid not in ids: ids.append(tid); vals.append(float(lg))
        res = dict(zip(ids, vals))
        if len(ids) >= window and len(t_top[i]) >= window:
            rows = [tgt_tokens[x] for x in ids[:window]]; cols = [tgt_tokens[x] for x in t_top[i][:window]]
            M = np.array([[Levenshtein.distance(a.replace(sm, ''), b.replace(tm, '')) for b in cols] for a in rows], np.float64)
            P = ref_sinkhorn(M, _softmax(s_log[j])[:window], _softmax(t_log[i])[:window], 30, eps)
            merged = {}
            for a in range(window):
                b = int(np.argmax(P[a])); tid = int(t_top[i][b])
                merged[tid] = merged.get(tid, 0.) + float(P[a, b])
            if not any(math.isnan(v) or v < 0 for v in merged.values()): res = merged
        out.append(res)
    return out


def compare(ours, ref, rtol=1e-9):
    "Positions whose {id: value} differ (ids exactly, values to rtol)."
    bad = []
    for i, (a, b) in enumerate(zip(ours, ref)):
        if set(a) != set(b) or any(abs(a[k] - b[k]) > rtol * max(1., abs(b[k])) for k in a): bad.append(i)
    return bad


# ----------------------------------------------------------------------------------------------------------------------
def load_released(path):
    "The released code's `src.utils.others` module, imported from the checkout at `path` (its repository root)."
    root = Path(path).expanduser().resolve()
    if not (root/'src'/'utils'/'others.py').is_file():
        raise SystemExit(f"--released {path}: expected the root of a PTA-LLM checkout (a folder with src/utils/others.py)")
    sys.path.insert(0, str(root))
    try: from src.utils import others
    except ModuleNotFoundError as e:
        raise SystemExit(f"--released: the released code imports {e.name!r}, which is not installed (pip install {e.name})") from None
    finally: sys.path.remove(str(root))
    if not Path(others.__file__).resolve().is_relative_to(root):
        raise SystemExit(f"--released: `src.utils.others` resolved to {others.__file__}, not inside {root} (another `src` package is importable)")
    return others


def released_align_doc(others, s_tok, t_tok, vm, srow, trow, window=10, eps=1e-5):
    "Per target position {target id: value} from the released `transform_step_logits_ot` (target = its base model)."
    for tok, marker in ((s_tok, vm.src_marker), (t_tok, vm.tgt_marker)):
        if others.TOKENIZER_TO_SPECIAL_TOKEN.setdefault(type(tok), marker) != marker:
            raise SystemExit(f"--released: both tokenizers are {type(tok).__name__} but use different word markers; the released code keys markers by class")
    vals, ids = others.transform_step_logits_ot(
        base_model_tokenizer=t_tok, blending_model_tokenizer=s_tok, base_model_vocab=t_tok.get_vocab(),
        base_model_input_ids=trow.input_ids.tolist(), blending_model_input_ids=srow.input_ids.tolist(),
        blending_model_per_step_logits=srow.topk_logits.tolist(), base_model_per_step_logits=trow.topk_logits.tolist(),
        base_model_per_step_indices=trow.topk_ids.tolist(), blending_model_per_step_indices=srow.topk_ids.tolist(),
        vocab_align_type='soft', blending_to_base_mapping=vm.str_map, epsilon_input=eps, logits_number=window)
    return [{int(i): float(v) for i, v in zip(ii, vv)} for ii, vv in zip(ids, vals)]


def load_tokenizer(name):
    from reprod.models import load_tokenizer as _load
    return _load(name)


def make_docs(src_tok, tgt_tok, text, n_docs, length):
    "Consecutive WikiText chunks of `length` target tokens, decoded back to text and tokenized by both tokenizers."
    ids = tgt_tok(text, add_special_tokens=False)['input_ids']
    docs = []
    for d in range(n_docs):
        chunk = ids[d * length:(d + 1) * length]
        if len(chunk) < length: break
        txt = tgt_tok.decode(chunk)
        t = tgt_tok(txt, add_special_tokens=False)['input_ids'][:length]
        s = src_tok(txt, add_special_tokens=False)['input_ids'][:int(length * 1.5)]
        docs.append((s, t))
    return docs


def topk_rows(name, seqs, k, synthetic, seed):
    from reprod.pta.logits import TopKRow
    rows = []
    if synthetic:
        g = torch.Generator().manual_seed(seed)
        for s in seqs:
            V = {'smollm2': 49152, 'gemma3': 262144}[name]
            L = len(s)
            top = torch.randint(0, V, (L, k), generator=g)
            nxt = torch.tensor(s[1:] + s[-1:])
            top[:, 0] = nxt                                          # the true next token on top, rest random
            top[:, 1:6] = torch.tensor(s)[torch.randint(0, L, (L, 5), generator=g)]    # frequent words
            logits = torch.sort(torch.randn(L, k, generator=g) * 3, 1, descending=True).values
            rows.append(TopKRow(torch.tensor(s), top, logits, 0.))
        return rows
    from reprod.models import create_lm
    from reprod.pta.logits import topk_forward
    model, tok = create_lm(name)
    for s in seqs:
        o = topk_forward(model, [s], k=k)[0]
        rows.append(TopKRow(torch.tensor(s), o['topk_ids'].long(), o['topk_logits'].float(), o['ce']))
    del model
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--docs', type=int, default=2); ap.add_argument('--ref-docs', type=int, default=2)
    ap.add_argument('--length', type=int, default=2048); ap.add_argument('--k', type=int, default=10)
    ap.add_argument('--synthetic', action='store_true', help='random top-k instead of running SmolLM2 and Gemma')
    ap.add_argument('--device', default='cpu'); ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--cache', default=str(Path.home()/'.cache'/'reprod'/'vocabmap'))
    ap.add_argument('--released', default=None, metavar='PATH', help='root of a checkout of the released PTA-LLM code: also time it')
    ap.add_argument('--released-docs', type=int, default=1, help='documents the released code aligns (about a minute each)')
    a = ap.parse_args(argv)
    others = load_released(a.released) if a.released else None
    from reprod.core import shared_data_dir
    from reprod.pta.pairing import build_vocab_map
    from reprod.pta.align import AlignConfig, align_doc, KINDS

    t0 = time.time()
    s_tok, t_tok = load_tokenizer('smollm2'), load_tokenizer('gemma3')
    vm = build_vocab_map(s_tok, t_tok, cache_dir=a.cache, decoded=False)     # the released map (raw strings): faithful + reference
    vm_dec = build_vocab_map(s_tok, t_tok, cache_dir=a.cache)                 # reprod's default map (decoded token text)
    print(f'tokenizers + vocab map ({vm}): {time.time() - t0:.1f}s (map cached in {a.cache})')
    text = (shared_data_dir()/'text'/'wikitext2_valid.txt').read_text()
    docs = make_docs(s_tok, t_tok, text, a.docs, a.length)
    import hashlib, json
    key = hashlib.sha256(json.dumps([docs, a.k, a.synthetic]).encode()).hexdigest()[:16]
    cache = Path(a.cache)/f'bench-topk-{key}.pt'
    if cache.exists(): srows, trows = torch.load(cache, weights_only=False)     # real top-k of these exact documents
    else:
        srows = topk_rows('smollm2', [s for s, _ in docs], a.k, a.synthetic, 1)
        trows = topk_rows('gemma3', [t for _, t in docs], a.k, a.synthetic, 2)
        cache.parent.mkdir(parents=True, exist_ok=True); torch.save((srows, trows), cache)
    T = sum(len(t) for _, t in docs)
    print(f'{len(docs)} docs, {T} target positions, source lengths {[len(s) for s, _ in docs]}, top-k {"synthetic" if a.synthetic else "real"}')

    def run(cfg, n, vm=vm):
        best, outs = math.inf, None
        for _ in range(a.repeats):
            t = time.perf_counter(); outs = [align_doc(vm, srows[d], trows[d], cfg) for d in range(n)]; best = min(best, time.perf_counter() - t)
        return best, outs

    faithful = AlignConfig(faithful=True, device=a.device)
    run(faithful, 1)                                                     # warm-up (numba / torch)
    t_ours, outs = run(faithful, len(docs))
    t_def, outs_def = run(AlignConfig(device=a.device), len(docs), vm_dec)
    n_ref = min(a.ref_docs, len(docs))
    str_map, tgt_vocab = vm.str_map, {}
    for i, s in enumerate(vm.tgt_tokens): tgt_vocab.setdefault(s, i)
    t = time.perf_counter()
    refs = [ref_align_doc(str_map, tgt_vocab, vm.src_tokens, vm.tgt_tokens, vm.src_marker, vm.tgt_marker, srows[d].input_ids.tolist(),
                          trows[d].input_ids.tolist(), srows[d].topk_ids.tolist(), srows[d].topk_logits.tolist(), trows[d].topk_ids.tolist(),
                          trows[d].topk_logits.tolist()) for d in range(n_ref)]
    t_ref = time.perf_counter() - t
    T_ref = sum(len(docs[d][1]) for d in range(n_ref))
    bad = sum(len(compare([outs[d].pairs(i) for i in range(len(docs[d][1]))], refs[d])) for d in range(n_ref))
    kinds = np.bincount(torch.cat([o.kind for o in outs]).numpy(), minlength=len(KINDS))
    its = torch.cat([o.ot_iters for o in outs]); its_d = torch.cat([o.ot_iters for o in outs_def])
    kinds_d = np.bincount(torch.cat([o.kind for o in outs_def]).numpy(), minlength=len(KINDS))
    print('position kinds (faithful):', {k: f'{v / T:.3f}' for k, v in zip(KINDS, kinds)})
    print('position kinds (default): ', {k: f'{v / T:.3f}' for k, v in zip(KINDS, kinds_d)})
    print(f'Sinkhorn sweeps: faithful median {its.float().median():.0f} max {its.max()}, default median {its_d.float().median():.0f} max {its_d.max()} '
          f'(cap {AlignConfig().max_iter} hit by {(its_d >= AlignConfig().max_iter).float().mean():.2%} of OT problems)')
    pr_ref, pr_ours, pr_def = T_ref / t_ref, T / t_ours, T / t_def
    print(f'reference (pure Python, official algorithm): {pr_ref:,.0f} positions/s ({t_ref / n_ref:.2f} s per doc)')
    print(f'reprod faithful   ({a.device}): {pr_ours:,.0f} positions/s ({t_ours / len(docs) * 1e3:.1f} ms per doc)')
    print(f'reprod default    ({a.device}): {pr_def:,.0f} positions/s ({t_def / len(docs) * 1e3:.1f} ms per doc)')
    print(f'outputs identical to the reference: {bad == 0} ({bad} differing positions of {T_ref})')
    print(f'SPEEDUP faithful vs reference: {pr_ours / pr_ref:.0f}x (target >= 100x)')
    res = dict(speedup=pr_ours / pr_ref, identical=bad == 0)
    if others is not None:
        n_rel = min(a.released_docs, len(docs))
        t = time.perf_counter()
        rel = [released_align_doc(others, s_tok, t_tok, vm, srows[d], trows[d]) for d in range(n_rel)]
        t_rel = time.perf_counter() - t
        T_rel = sum(len(docs[d][1]) for d in range(n_rel))
        diff = [compare([outs[d].pairs(i) for i in range(len(docs[d][1]))], rel[d]) for d in range(n_rel)]
        n_bad = sum(map(len, diff))
        pr_rel = T_rel / t_rel
        print(f'released code ({a.released}): {pr_rel:,.0f} positions/s ({t_rel / n_rel:.2f} s per doc, {n_rel} doc(s), {T_rel} positions)')
        print(f'outputs identical to the released code: {n_bad == 0} ({n_bad} differing positions of {T_rel}'
              + (f'; first at doc 0 positions {diff[0][:5]}' if n_bad and diff[0] else '') + ')')
        print(f'SPEEDUP faithful vs released code: {pr_ours / pr_rel:.0f}x (target >= 200x)')
        res.update(speedup_released=pr_ours / pr_rel, identical_released=n_bad == 0)
        res['identical'] = res['identical'] and n_bad == 0

    # memory of one sequence's teacher: dense [T, V] as the official collator builds it vs sparse [T, K]
    L, V = len(docs[0][1]), vm.tgt_vocab_size
    o = outs_def[0]
    r0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    sparse_bytes = o.ids.int().nbytes + o.probs.nbytes
    dense = torch.zeros(L, V, dtype=torch.bfloat16); dense.scatter_(1, o.ids, o.probs.bfloat16())
    dense_bytes = dense.nbytes
    r1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f'teacher memory per {L}-token sequence: sparse [T,{o.ids.shape[1]}] int32+fp32 {sparse_bytes / 2**20:.2f} MiB; '
          f'dense [T,{V}] bf16 {dense_bytes / 2**20:.0f} MiB (peak RSS +{(r1 - r0) / 1024:.0f} MiB); ratio {dense_bytes / sparse_bytes:.0f}x')
    return res


if __name__ == '__main__':
    res = main()
    sys.exit(0 if res['identical'] else 1)
