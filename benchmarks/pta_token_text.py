"""PTA gate: share of target positions whose token fails the gate (and share reaching the OT), raw token strings vs decoded
token text, on the real SmolLM2-135M (byte-level BPE, Ġ) and Gemma-3-270m (SentencePiece, ▁) tokenizers, both directions.

    python benchmarks/pta_token_text.py                 # the first 40 paragraphs of WikiText-2 valid
    python benchmarks/pta_token_text.py --docs 200
    python benchmarks/pta_token_text.py --split wikitext --docs 4   # whole articles (headings, newlines), first 8000 characters

Whether a position gets a pair, passes the gate, or neither depends only on the two token sequences and the vocabulary map
(not on the models' logits), so random top-k rows (drawn from each document's own ids) stand in for the models; the OT
share counts positions with >= window distinct mapped ids in those rows and is only indicative. Rows: the vocabulary map (raw: the released MinED on
marker-swapped strings; decoded: on the pieces' text) x the alignment's `token_text` (pairing, gate, OT costs), for the
default configuration and for `faithful=True` (which always compares raw strings).
"""
import argparse, os, time
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault('HF_HUB_OFFLINE', '1')


def fake_row(ids, k, seed):
    "Random top-k rows drawn from the document's own ids (so the map is only needed on them), the true next token first."
    from reprod.pta.logits import TopKRow
    g = torch.Generator().manual_seed(seed); L = len(ids); pool = torch.tensor(list(ids))
    top = pool[torch.randint(0, len(pool), (L, k), generator=g)]; top[:, 0] = torch.tensor(list(ids[1:]) + list(ids[-1:]))
    return TopKRow(torch.tensor(ids), top, torch.sort(torch.randn(L, k, generator=g), 1, descending=True).values, 0.)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--docs', type=int, default=40, help='WikiText-2 valid paragraphs (the first N)')
    ap.add_argument('--split', default='paragraph', choices=('paragraph', 'wikitext'), help='paragraphs, or whole articles (cut to --chars)')
    ap.add_argument('--chars', type=int, default=8000, help='with --split wikitext: characters kept per article')
    ap.add_argument('--data', default=None, help='folder holding text/wikitext2_valid.txt (default: the shared data folder)')
    a = ap.parse_args(argv)
    from transformers import AutoTokenizer
    from reprod.core import shared_data_dir
    from reprod.data.text import load_corpus
    from reprod.models import gguf_location
    from reprod.pta.align import AlignConfig, align_stores
    from reprod.pta.pipeline import used_vocab_map
    data = Path(a.data) if a.data else shared_data_dir()
    docs = load_corpus(str(data/'text'/'wikitext2_valid.txt'), doc_split=a.split, max_docs=a.docs)
    if a.split == 'wikitext': docs = [d[:a.chars] for d in docs]
    toks = {}
    for n in ('smollm2', 'gemma3'):
        folder, file = gguf_location(n); toks[n] = AutoTokenizer.from_pretrained(folder, gguf_file=file)
    print(f"{len(docs)} WikiText-2 valid {'paragraphs' if a.split == 'paragraph' else f'articles (first {a.chars} characters)'}")
    print('| source → target | map | alignment | positions | gate fail | many-to-one | OT (indicative) |\n|---|---|---|---|---|---|---|')
    for src, tgt in (('gemma3', 'smollm2'), ('smollm2', 'gemma3')):
        s, t = toks[src], toks[tgt]
        sid = [s(d, add_special_tokens=False)['input_ids'] for d in docs]; tid = [t(d, add_special_tokens=False)['input_ids'] for d in docs]
        keep = [i for i in range(len(docs)) if len(sid[i]) and len(tid[i])]
        srows = [fake_row(sid[i], 10, i) for i in keep]; trows = [fake_row(tid[i], 10, 1000 + i) for i in keep]
        used = np.unique(np.concatenate([r.input_ids.numpy() for r in srows]))
        vms = {dec: used_vocab_map(s, t, used, decoded=dec) for dec in (False, True)}
        for label, dec, cfg in (('raw', False, AlignConfig(faithful=True)), ('raw', False, AlignConfig(token_text='raw')),
                                ('decoded', True, AlignConfig(token_text='raw')), ('decoded', True, AlignConfig())):
            t0 = time.time()
            _, _, st = align_stores(vms[dec], srows, trows, cfg)
            what = 'faithful=True' if cfg.faithful else f"token_text={cfg.token_text!r}"
            print(f"| {src} → {tgt} | {label} | {what} | {st['positions']} | {st['frac_gate_fail']:.1%} | {st['frac_many_to_one']:.1%} "
                  f"| {st['frac_ot']:.1%} |  ({time.time() - t0:.1f} s)")


if __name__ == '__main__':
    main()
