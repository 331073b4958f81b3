"""PTA gate on real top-k stores: the share of target positions that fail the gate and that reach the OT, comparing raw
token strings (the map and the alignment's `token_text='raw'`), the released code (`faithful=True`) and reprod's default
(decoded token text, EOS paired with EOS). The stores are the top-k folders a `pta_fusion` run writes under its work
folder (`<work_dir>/topk/<model>-…`); the position kinds depend only on the two stores and the map.

    python benchmarks/pta_gate_share.py --source gemma3 --target smollm2 \\
        --source-store <work_dir>/topk/gemma3-…-k10-L128-bos --target-store <work_dir>/topk/smollm2-…-k10-L128
"""
import argparse, os, warnings

os.environ.setdefault('HF_HUB_OFFLINE', '1')


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--source', required=True, help='source model name (reprod.models) or local folder: its tokenizer')
    ap.add_argument('--target', required=True, help='target model name or local folder: its tokenizer')
    ap.add_argument('--source-store', required=True); ap.add_argument('--target-store', required=True)
    a = ap.parse_args(argv)
    from reprod.models import load_tokenizer
    from reprod.pta.align import AlignConfig, align_stores
    from reprod.pta.logits import TopKStore
    from reprod.pta.pipeline import used_source_ids, used_vocab_map
    src, tgt = TopKStore(a.source_store), TopKStore(a.target_store)
    s_tok, t_tok = load_tokenizer(a.source), load_tokenizer(a.target)
    used = used_source_ids(src)
    rows = {}
    for name, decoded, cfg in (('raw strings', False, AlignConfig(token_text='raw')), ('faithful=True', False, AlignConfig(faithful=True)),
                               ('decoded text (default)', True, AlignConfig())):
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')          # the unrelated-text warning of very short documents
            _, _, st = align_stores(used_vocab_map(s_tok, t_tok, used, decoded=decoded), src, tgt, cfg, progress=False)
        rows[name] = st
    print(f'{a.source} -> {a.target}: {len(tgt)} documents')
    print('| comparison | gate fail | reach OT | FuseLLM transfer | many-to-one |\n|---|---|---|---|---|')
    for name, st in rows.items():
        print(f"| {name} | {st['frac_gate_fail']:.2%} | {st['frac_ot']:.2%} | {st['frac_fuse']:.2%} | {st['frac_many_to_one']:.2%} |")
    raw, dec = rows['raw strings'], rows['decoded text (default)']
    ratio = lambda k: f"{dec[k] / raw[k]:.3f}" if raw[k] > 0 else 'n/a (none with raw strings)'
    print(f"RATIO gate failures decoded / raw: {ratio('frac_gate_fail')}; positions reaching OT decoded / raw: {ratio('frac_ot')}")


if __name__ == '__main__':
    main()
