"""Paper-scale throughput on one GPU, with random weights (no downloads): one short run answers "how long would the papers' protocols take".

    python benchmarks/gpu_paper_scale.py --out results/gpu_paper_scale          # on a CUDA machine (a few minutes)
    python benchmarks/gpu_paper_scale.py --dry-run --out /tmp/gps               # the same code, tiny sizes, CPU, seconds (CI)

Four measurements, each through the library (reprod.models builds the models, reprod.engine / vfpt / mept / pta run them):

1. VFPT (alpha 0.5, L 10) vs VPT-deep on ViT-B/16 at 224 px, batch 64, via `engine.fit` (bf16 autocast + torch.compile on
   CUDA) on VTAB-1k-sized cached-tensor loaders kept on the device (800 train, 200 val images): s/step, images/s, peak
   memory, eval images/s, the VFPT/VPT ratio, and the projected wall time of the full VTAB-1k protocol: 19 tasks x 40
   lr/wd configs on train800/val200, then 5 seeds per task on train800val200 evaluated on test, 100 epochs each, from the
   measured step and eval times. The projection is given for evaluation every epoch (the engine default, eval_every=1) and
   for evaluation after the last epoch only.
2. MEPT vs prompt tuning on a T5-base-sized encoder-decoder (random), 512 input tokens, batch 32, Adafactor: s/step, peak memory, ratio.
3. PTA-LLM top-k extraction (`pta.logits.topk_forward`, k 10) of a ~1.1B Llama-shaped random model (TinyLlama's shape) at 2048
   tokens: tokens/s against the plain forward of the same batch.
4. OT alignment (`pta.align.transport`, window 10): OT positions/s on the device backend (batched torch) and on the CPU backend (numba).

Writes `gpu_paper_scale.json` and `gpu_paper_scale.md` into --out. Times are best-of-repeats (slower repeats measure
interference, not the code); the warm-up (compilation) is excluded and reported apart.
"""
import argparse, json, math, platform, resource, sys, time
from pathlib import Path

import torch

from reprod import core, engine, mept, models, vfpt
from reprod.data.images import TensorLoader
from reprod.pta.align import AlignConfig, transport
from reprod.pta.logits import topk_forward

# VTAB-1k test-split sizes (the VPT paper's dataset table); the train800val200 protocol evaluates on these.
VTAB_TEST_SIZES = {'cifar100': 10000, 'caltech101': 6084, 'dtd': 1880, 'oxford_flowers102': 6149, 'oxford_iiit_pet': 3669,
                   'svhn': 26032, 'sun397': 21750, 'patch_camelyon': 32768, 'eurosat': 5400, 'resisc45': 6300,
                   'diabetic_retinopathy': 42670, 'clevr_count': 15000, 'clevr_dist': 15000, 'dmlab': 22735, 'kitti': 711,
                   'dsprites_loc': 73728, 'dsprites_ori': 73728, 'smallnorb_azi': 12150, 'smallnorb_ele': 12150}
VTAB_PROTOCOL = dict(tasks=19, configs=40, tune_train=800, tune_val=200, seeds=5, final_train=1000, epochs=100)

SIZES = {   # 'paper': the papers' settings; 'dry': the same code paths at toy sizes (CPU, seconds)
    'paper': dict(vit='vit_base_patch16_224', img=224, batch=64, eval_batch=256, n_train=800, n_val=200, vit_steps=200, vit_warmup=26,
                  t5=dict(vocab_size=32128, hidden=768, layers=12, d_ff=3072, d_kv=64, num_heads=12, num_decoder_layers=12),
                  t5_seq=512, t5_batch=32, t5_steps=30, label_len=3,
                  llama=dict(vocab_size=32000, hidden=2048, layers=22, intermediate_size=5632, num_attention_heads=32, num_key_value_heads=4),
                  pta_len=2048, pta_batch=4, pta_steps=10, ot_problems=32768, repeats=3),
    'dry': dict(vit='test_vit', img=32, batch=8, eval_batch=16, n_train=24, n_val=16, vit_steps=4, vit_warmup=1,
                t5=dict(vocab_size=64, hidden=32, layers=2, d_ff=64, d_kv=8, num_heads=4, num_decoder_layers=1),
                t5_seq=16, t5_batch=4, t5_steps=2, label_len=2,
                llama=dict(vocab_size=64, hidden=32, layers=2, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2),
                pta_len=32, pta_batch=2, pta_steps=2, ot_problems=64, repeats=2),
}


def sync(dev):
    if dev.type == 'cuda': torch.cuda.synchronize(dev)


def reset_peak(dev):
    if dev.type == 'cuda': torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats(dev)


def peak_gib(dev):
    "Peak device memory allocated since the last reset (CUDA), else the process's peak RSS (CPU: not per measurement)."
    if dev.type == 'cuda': return torch.cuda.max_memory_allocated(dev) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def best_of(fn, repeats):
    "min over `repeats` calls of fn() (each returns seconds)."
    return min(fn() for _ in range(repeats))


# ----------------------------------------------------------------------------------------------------------------------
def vit_bench(S, dev):
    "VFPT vs VPT-deep through `engine.fit` on device-resident VTAB-1k-sized loaders."
    g = torch.Generator().manual_seed(0)
    mk = lambda n, bs, shuffle: TensorLoader(torch.randint(0, 256, (n, 3, S['img'], S['img']), dtype=torch.uint8, generator=g),
                                             torch.randint(0, 10, (n,), generator=g), bs, shuffle=shuffle, device=dev)
    train, val = mk(S['n_train'], S['batch'], True), mk(S['n_val'], S['eval_batch'], False)
    out = {}
    for method in ('vpt_deep', 'vfpt'):
        core.seed_everything(0)
        model = vfpt.get_vfpt_model(models.create_backbone(S['vit'], img_size=S['img']), vfpt.method_config(method, 10, 10, 0.5))
        base = vfpt.vtab_recipe(0.1, 0.001, epochs=10**6, batch_size=S['batch']).__dict__
        # eval only after the last epoch of each fit: the timed fit then has one eval of val200 (compiled in the warm-up)
        fit = lambda steps: engine.fit(model, train, engine.Recipe(**{**base, 'max_steps': steps, 'eval_every': 10**9, 'compile': S['compile']}),
                                       {'val': val}, device=dev, progress=False)
        t0 = time.perf_counter(); fit(S['vit_warmup']); warm = time.perf_counter() - t0
        runs = []
        for _ in range(S['repeats']):
            reset_peak(dev)
            r = fit(S['vit_steps'])
            runs.append((r.timings['s_per_step'], r.timings['eval_s'], peak_gib(dev)))
        s, ev, mem = min(runs)
        tr, tot = model.trainable_parameters() if hasattr(model, 'trainable_parameters') else (0, 0)
        out[method] = dict(s_per_step=s, images_per_s=S['batch'] / s, eval_s=ev, eval_images_per_s=S['n_val'] / ev,
                           peak_gib=mem, warmup_s=warm, trainable=tr, total_params=tot, s_per_step_runs=[x[0] for x in runs])
    out['ratio_vfpt_vpt'] = out['vfpt']['s_per_step'] / out['vpt_deep']['s_per_step']
    out['setting'] = dict(backbone=S['vit'], img=S['img'], batch=S['batch'], eval_batch=S['eval_batch'], steps=S['vit_steps'],
                          fourier_percentage=0.5, prompt_len=10, compile=S['compile'])
    return out


def vtab_projection(m: dict, batch: int, eval_every: int) -> dict:
    "Wall time (hours) of the VTAB-1k protocol from one method's measured s/step and eval images/s."
    P, E = VTAB_PROTOCOL, VTAB_PROTOCOL['epochs']
    n_eval = math.ceil(E / eval_every) if eval_every <= E else 1
    tune_train = P['tasks'] * P['configs'] * math.ceil(P['tune_train'] / batch) * E * m['s_per_step']
    tune_eval = P['tasks'] * P['configs'] * n_eval * P['tune_val'] / m['eval_images_per_s']
    final_train = P['tasks'] * P['seeds'] * math.ceil(P['final_train'] / batch) * E * m['s_per_step']
    final_eval = P['seeds'] * n_eval * sum(VTAB_TEST_SIZES.values()) / m['eval_images_per_s']
    h = lambda s: s / 3600
    return dict(eval_every=eval_every, tune_train_h=h(tune_train), tune_eval_h=h(tune_eval), final_train_h=h(final_train),
                final_eval_h=h(final_eval), total_h=h(tune_train + tune_eval + final_train + final_eval))


# ----------------------------------------------------------------------------------------------------------------------
def t5_bench(S, dev):
    "MEPT vs prompt tuning on one frozen T5-sized backbone: forward + backward + Adafactor step on a fixed batch."
    core.seed_everything(0)
    cfg = S['t5']
    bb = models.tiny_lm('t5', 'seq2seq', vocab_size=cfg['vocab_size'], hidden=cfg['hidden'], layers=cfg['layers'], d_ff=cfg['d_ff'],
                        d_kv=cfg['d_kv'], num_heads=cfg['num_heads'], num_decoder_layers=cfg['num_decoder_layers'],
                        pad_token_id=0, decoder_start_token_id=0, eos_token_id=1).to(dev)
    g = torch.Generator().manual_seed(0)
    batch = {'input_ids': torch.randint(2, cfg['vocab_size'], (S['t5_batch'], S['t5_seq']), generator=g),
             'attention_mask': torch.ones(S['t5_batch'], S['t5_seq'], dtype=torch.long),
             'labels': torch.randint(2, cfg['vocab_size'], (S['t5_batch'], S['label_len']), generator=g)}
    batch = engine.to_device(batch, dev)
    out = {}
    for method, kw in (('prompt_tuning', {}), ('mept', dict(num_experts=4, top_k=1))):
        net = mept.get_mept_model(bb, mept.method_config(method, prompt_len=10, **kw)).train()
        mine = [p for n, p in net.named_parameters() if p.requires_grad and not n.startswith('backbone.')]
        opt = engine.build_optimizer(torch.nn.ParameterList(mine), engine.Recipe(optimizer='adafactor', lr=0.3))

        def steps(n):
            sync(dev); t = time.perf_counter()
            for _ in range(n):
                with engine.autocast(dev, 'auto'): loss = mept.t2t_loss(net, batch)
                loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
            sync(dev); return (time.perf_counter() - t) / n
        steps(1)                                                         # warm-up
        reset_peak(dev)
        s = best_of(lambda: steps(S['t5_steps']), S['repeats'])
        out[method] = dict(s_per_step=s, sequences_per_s=S['t5_batch'] / s, peak_gib=peak_gib(dev), trainable=sum(p.numel() for p in mine))
        net.unload()
    out['ratio_mept_pt'] = out['mept']['s_per_step'] / out['prompt_tuning']['s_per_step']
    out['setting'] = dict(**cfg, seq_len=S['t5_seq'], batch=S['t5_batch'], prompt_len=10, num_experts=4, top_k=1, optimizer='adafactor',
                          backbone_params=sum(p.numel() for p in bb.parameters()))
    return out


# ----------------------------------------------------------------------------------------------------------------------
def topk_bench(S, dev):
    "Top-k extraction vs the plain forward of a ~1.1B Llama-shaped random model (freed on return)."
    cfg = S['llama']
    with torch.device(dev):                          # build the weights on the device: a 1.1B CPU init would dominate the run
        lm = models.tiny_lm('llama', 'causal', vocab_size=cfg['vocab_size'], hidden=cfg['hidden'], layers=cfg['layers'],
                            intermediate_size=cfg['intermediate_size'], num_attention_heads=cfg['num_attention_heads'],
                            num_key_value_heads=cfg['num_key_value_heads'], max_positions=S['pta_len'], pad_token_id=0)
    if dev.type == 'cuda': lm = lm.to(torch.bfloat16)
    g = torch.Generator().manual_seed(0)
    seqs = torch.randint(1, cfg['vocab_size'], (S['pta_batch'], S['pta_len']), generator=g)
    ids, mask = seqs.to(dev), torch.ones_like(seqs).to(dev)

    @torch.inference_mode()
    def plain(n):
        sync(dev); t = time.perf_counter()
        for _ in range(n):
            with engine.autocast(dev, 'auto'): lm(input_ids=ids, attention_mask=mask).logits
        sync(dev); return (time.perf_counter() - t) / n

    def topk(n):
        sync(dev); t = time.perf_counter()
        for _ in range(n): topk_forward(lm, seqs.tolist(), k=10, device=dev)   # ends with copies to the host: synchronised
        return (time.perf_counter() - t) / n
    plain(1); topk(1)
    reset_peak(dev)
    tp = best_of(lambda: plain(S['pta_steps']), S['repeats'])
    tk = best_of(lambda: topk(S['pta_steps']), S['repeats'])
    ntok = S['pta_batch'] * S['pta_len']
    out = dict(plain_tokens_per_s=ntok / tp, topk_tokens_per_s=ntok / tk, topk_over_plain_time=tk / tp, peak_gib=peak_gib(dev),
               setting=dict(**cfg, seq_len=S['pta_len'], batch=S['pta_batch'], k=10, params=sum(p.numel() for p in lm.parameters()),
                            dtype=str(next(lm.parameters()).dtype)))
    return out


def pta_bench(S, dev):
    "PTA-LLM: top-k extraction throughput, then OT positions/s on the device and CPU backends."
    out = topk_bench(S, dev)
    if dev.type == 'cuda': torch.cuda.empty_cache()
    g = torch.Generator().manual_seed(1)

    # OT: one 10x10 problem per OT position; integer edit-distance-like costs, softmax marginals
    N, W = S['ot_problems'], 10
    cost = torch.randint(0, 9, (N, W, W), generator=g).double()
    r, c = torch.randn(N, W, generator=g).mul(3).softmax(1).double(), torch.randn(N, W, generator=g).mul(3).softmax(1).double()
    ot = {}
    for name, cfg_ in (('default', AlignConfig()), ('faithful', AlignConfig(faithful=True))):
        for where in ({'cpu', dev.type}):
            d = torch.device(where)
            args = [x.to(d) for x in (cost, r, c)]
            def once():
                sync(d); t = time.perf_counter(); transport(*args, cfg_); sync(d); return time.perf_counter() - t
            once()
            ot[f'{name}/{where}'] = N / best_of(once, S['repeats'])
    out['ot_positions_per_s'] = ot
    out['ot_problems'] = N
    return out


# ----------------------------------------------------------------------------------------------------------------------
def markdown(res: dict) -> str:
    "The summary table of whatever parts `res` holds."
    L = [f"# Paper-scale throughput ({'DRY RUN, toy sizes' if res['dry_run'] else 'paper sizes'})", '',
         f"device: {res['device']}; torch {res['torch']}; {res['date']}"]
    if (v := res.get('vit')):
        s = v['setting']
        L += ['', f"## VFPT vs VPT-deep ({s['backbone']}, {s['img']} px, batch {s['batch']}, eval batch {s['eval_batch']})", '',
              '| method | s/step | images/s | eval images/s | peak GiB | warm-up s |', '|---|---|---|---|---|---|']
        for m in ('vpt_deep', 'vfpt'):
            x = v[m]; L.append(f"| {m} | {x['s_per_step']:.4f} | {x['images_per_s']:.1f} | {x['eval_images_per_s']:.1f} | {x['peak_gib']:.2f} | {x['warmup_s']:.1f} |")
        L += ['', f"VFPT / VPT-deep step-time ratio: **{v['ratio_vfpt_vpt']:.3f}**", '',
              '### Projected VTAB-1k protocol (19 tasks x 40 configs on train800/val200, then 5 seeds on train800val200 -> test; 100 epochs)', '',
              '| method | eval | tune train h | tune eval h | final train h | final eval h | total h |', '|---|---|---|---|---|---|---|']
        for m in ('vpt_deep', 'vfpt'):
            for pr in res['vtab_projection'][m]:
                L.append(f"| {m} | every {pr['eval_every']} ep | {pr['tune_train_h']:.1f} | {pr['tune_eval_h']:.1f} | {pr['final_train_h']:.1f} | "
                         f"{pr['final_eval_h']:.1f} | **{pr['total_h']:.1f}** |")
    if (t := res.get('t5')):
        s = t['setting']
        L += ['', f"## MEPT vs prompt tuning (T5-sized, {s['backbone_params'] / 1e6:.0f}M params, {s['seq_len']} tokens, batch {s['batch']}, Adafactor)", '',
              '| method | s/step | sequences/s | peak GiB | trainable |', '|---|---|---|---|---|']
        for m in ('prompt_tuning', 'mept'):
            x = t[m]; L.append(f"| {m} | {x['s_per_step']:.4f} | {x['sequences_per_s']:.1f} | {x['peak_gib']:.2f} | {x['trainable']:,} |")
        L += ['', f"MEPT / PT step-time ratio: **{t['ratio_mept_pt']:.3f}**"]
    if (p := res.get('pta')):
        s = p['setting']
        L += ['', f"## PTA-LLM top-k extraction ({s['params'] / 1e9:.2f}B Llama-shaped, {s['dtype']}, {s['seq_len']} tokens x {s['batch']})", '',
              f"plain forward {p['plain_tokens_per_s']:,.0f} tokens/s; top-{s['k']} extraction {p['topk_tokens_per_s']:,.0f} tokens/s "
              f"(time ratio {p['topk_over_plain_time']:.3f}); peak {p['peak_gib']:.2f} GiB", '',
              f"OT alignment ({p['ot_problems']} problems of 10x10), positions/s: " + ', '.join(f'{k} {x:,.0f}' for k, x in p['ot_positions_per_s'].items())]
    return '\n'.join(L) + '\n'


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--out', required=True, help='folder for gpu_paper_scale.json and .md')
    ap.add_argument('--dry-run', action='store_true', help='tiny sizes on CPU (what CI runs)')
    ap.add_argument('--device', default='auto')
    ap.add_argument('--only', default='vit,t5,pta', help='comma list of parts to run (vit, t5, pta)')
    ap.add_argument('--repeats', type=int, default=None, help='timed repeats per measurement (default: 3 paper, 2 dry run)')
    ap.add_argument('--no-compile', action='store_true', help='ViT part: eager instead of torch.compile (if compilation fails)')
    a = ap.parse_args(argv)
    S = {**SIZES['dry' if a.dry_run else 'paper'], 'compile': False if a.no_compile else 'auto'}
    if a.repeats is not None:
        if a.repeats < 1: ap.error(f'--repeats={a.repeats}: expected >= 1')
        S['repeats'] = a.repeats
    dev = torch.device('cpu') if a.dry_run else core.get_device(a.device)
    if not a.dry_run and dev.type != 'cuda': sys.exit("gpu_paper_scale: no CUDA device; paper sizes need a GPU (use --dry-run to check the code on CPU)")
    if dev.type == 'cuda': torch.backends.cuda.matmul.allow_tf32 = True; torch.backends.cudnn.allow_tf32 = True
    parts = [x.strip() for x in a.only.split(',') if x.strip()]
    bad = set(parts) - {'vit', 't5', 'pta'}
    if bad: ap.error(f"--only: unknown part(s) {sorted(bad)}; expected some of vit, t5, pta")
    res = dict(dry_run=a.dry_run, device=torch.cuda.get_device_name(dev) if dev.type == 'cuda' else f'cpu ({platform.processor() or "?"})',
               torch=torch.__version__, date=time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime()), sizes=S)
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for name, fn in (('vit', vit_bench), ('t5', t5_bench), ('pta', pta_bench)):
        if name not in parts: continue
        t = time.perf_counter(); res[name] = fn(S, dev); res.setdefault('part_s', {})[name] = time.perf_counter() - t
        if name == 'vit':
            res['vtab_projection'] = {m: [vtab_projection(res['vit'][m], S['batch'], e) for e in (1, VTAB_PROTOCOL['epochs'])] for m in ('vpt_deep', 'vfpt')}
        res['total_s'] = time.perf_counter() - t0
        # written after every part, so a run cut short by a time limit still leaves what it measured
        (out/'gpu_paper_scale.json').write_text(json.dumps(res, indent=1, default=str))
        (out/'gpu_paper_scale.md').write_text(markdown(res))
        print(f'{name}: done in {res["part_s"][name]:.1f}s', flush=True)
    print(markdown(res))
    print(f'wrote {out}/gpu_paper_scale.json and .md ({time.perf_counter() - t0:.1f}s)')
    return res


if __name__ == '__main__':
    main()
