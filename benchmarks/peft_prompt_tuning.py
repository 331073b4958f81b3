"""reprod's prompt tuning and P-tuning v2 against Hugging Face PEFT on SmolLM2-135M: same init, same batch, same optimiser.

    python benchmarks/peft_prompt_tuning.py                          # CPU, batch 8 x 128 tokens, 10 virtual tokens
    python benchmarks/peft_prompt_tuning.py --device cuda --batch-size 32 --seq-len 256

Pairs, each on its own copy of the same SmolLM2-135M classifier (3 labels, `score` head trainable in both):

- reprod `prompt_tuning` vs PEFT `PromptTuningConfig` (SEQ_CLS): PEFT's prompt embedding is set to reprod's prompt.
- reprod `ptuning_v2` (key/value prefixes through the cache API) vs PEFT `PrefixTuningConfig` (SEQ_CLS, no reparametrisation):
  PEFT's prefix table is set to reprod's prefixes (layer l's keys/values are PEFT's rows 2l/2l+1).

Printed per pair: the loss of the first step (must agree to 1e-5) and of the second (after one identical AdamW update),
then the step time (forward + backward + AdamW) of each, alternating repeats, and the best-of-repeats ratio reprod / PEFT
(target <= 1.0; the ratio of medians beside it). Where the two define different computations, it is said and measured:

- Prompt tuning on right-padded batches: PEFT hands the model `inputs_embeds` only, so the HF classifier cannot find the
  padding and pools the last position (a pad token); reprod pools the last real token (`cls_pool='last_real'`), and
  `cls_pool='last'` (the released MEPT code's choice) reproduces PEFT. Prefix tuning keeps `input_ids`, so both pool the last real token.
- P-tuning v2's optional MLP reparametrisation (PEFT `prefix_projection=True`) is not in reprod; on T5, reprod's P-tuning v2
  replaces encoder hidden states (`ptv2_mode='replace'`), which PEFT does not offer.
"""
import argparse, copy, inspect, os, statistics, time

import torch

os.environ.setdefault('HF_HUB_OFFLINE', '1')

from reprod import core, engine, mept, models


def make_batch(tok, batch_size, seq_len, pad_rows: bool, seed=0):
    "Consecutive WikiText-2 token windows (random ids if the text is missing); with `pad_rows`, odd rows right-padded by a quarter."
    g = torch.Generator().manual_seed(seed)
    path = core.shared_data_dir()/'text'/'wikitext2_valid.txt' if core.shared_data_dir() else None
    if path is not None and path.exists():
        ids = torch.tensor(tok(path.read_text()[:200_000], add_special_tokens=False)['input_ids'])
        starts = torch.randint(0, len(ids) - seq_len, (batch_size,), generator=g)
        x = torch.stack([ids[s:s + seq_len] for s in starts])
    else: x = torch.randint(5, len(tok), (batch_size, seq_len), generator=g)
    mask = torch.ones_like(x)
    if pad_rows:
        mask[1::2, -seq_len // 4:] = 0; x[mask == 0] = tok.pad_token_id
    return {'input_ids': x, 'attention_mask': mask, 'labels': torch.randint(0, 3, (batch_size,), generator=g)}


def pair(kind, base, P, cls_pool='last_real'):
    "(reprod model, PEFT model) of `kind` ('prompt_tuning' | 'ptuning_v2') with the same starting weights."
    from peft import PrefixTuningConfig, PromptTuningConfig, TaskType, get_peft_model
    ours = mept.get_mept_model(copy.deepcopy(base), mept.method_config(kind, prompt_len=P, cls_pool=cls_pool))
    if kind == 'prompt_tuning':
        theirs = get_peft_model(copy.deepcopy(base), PromptTuningConfig(task_type=TaskType.SEQ_CLS, num_virtual_tokens=P))
        w = ours.input_prompt.prompt.detach()[0]                                    # (P, d)
    else:
        theirs = get_peft_model(copy.deepcopy(base), PrefixTuningConfig(task_type=TaskType.SEQ_CLS, num_virtual_tokens=P, prefix_projection=False))
        kv = ours.kv_prefix.detach()                                                # (layers, key|value, kv heads, P, head dim)
        w = kv.permute(3, 0, 1, 2, 4).reshape(P, -1)                                 # PEFT: (P, layers*2*kv heads*head dim)
    emb = theirs.prompt_encoder['default'].embedding.weight
    if emb.shape != w.shape: raise RuntimeError(f"PEFT's {kind} table is {tuple(emb.shape)}, reprod's is {tuple(w.shape)}: not the same parametrisation")
    with torch.no_grad(): emb.copy_(w)
    return ours.train(), theirs.train()


def loss_of(model, batch, is_peft):
    if not is_peft: return mept.cls_loss(model, batch)
    if model.peft_config['default'].peft_type != 'PREFIX_TUNING' or 'past_key_values' in inspect.signature(model.base_model.forward).parameters:
        return model(input_ids=batch['input_ids'], attention_mask=batch['attention_mask'], labels=batch['labels']).loss
    # transformers >= 5 names the cache argument `cache`; PEFT's SEQ_CLS prefix forward looks only for `past_key_values` and
    # refuses. This is that forward with the new name: PEFT builds the prefix cache, the mask gets P leading ones.
    B, P = batch['input_ids'].shape[0], model.peft_config['default'].num_virtual_tokens
    mask = torch.cat([batch['attention_mask'].new_ones(B, P), batch['attention_mask']], 1)
    return model.base_model(input_ids=batch['input_ids'], attention_mask=mask, cache=model.get_prompt(B), labels=batch['labels']).loss


def trainable(model):
    return torch.nn.ParameterList([p for p in model.parameters() if p.requires_grad])


def compare(kind, base, batch, a, dev):
    "First- and second-step losses of the pair and their step times (alternating repeats)."
    ours, theirs = pair(kind, base, a.prompt_len)
    ours.to(dev); theirs.to(dev)
    n_ours, n_theirs = sum(p.numel() for p in trainable(ours)), sum(p.numel() for p in trainable(theirs))
    recipe = engine.Recipe(optimizer='adamw', lr=a.lr)
    nets = {'reprod': (ours, False, engine.build_optimizer(trainable(ours), recipe)),
            'peft': (theirs, True, engine.build_optimizer(trainable(theirs), recipe))}
    losses = {k: [] for k in nets}
    for k, (m, is_peft, opt) in nets.items():             # two identical steps each: the losses before each update
        for _ in range(2):
            loss = loss_of(m, batch, is_peft); losses[k].append(loss.item())
            loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)

    def steps(k, n):
        m, is_peft, opt = nets[k]
        if dev.type == 'cuda': torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(n):
            loss_of(m, batch, is_peft).backward(); opt.step(); opt.zero_grad(set_to_none=True)
        if dev.type == 'cuda': torch.cuda.synchronize()
        return (time.perf_counter() - t) / n
    times = {k: [] for k in nets}
    for r in range(a.repeats):
        for k in (('reprod', 'peft') if r % 2 == 0 else ('peft', 'reprod')): times[k].append(steps(k, a.steps))
    best = {k: min(v) for k, v in times.items()}
    d1, d2 = abs(losses['reprod'][0] - losses['peft'][0]), abs(losses['reprod'][1] - losses['peft'][1])
    print(f"\n== {kind}: reprod vs PEFT {'PromptTuningConfig' if kind == 'prompt_tuning' else 'PrefixTuningConfig'} "
          f"(trainable {n_ours:,} vs {n_theirs:,})")
    print(f"  step-1 loss reprod {losses['reprod'][0]:.7f}  peft {losses['peft'][0]:.7f}  |diff| {d1:.2e}  (must be <= 1e-5: {d1 <= 1e-5})")
    print(f"  step-2 loss reprod {losses['reprod'][1]:.7f}  peft {losses['peft'][1]:.7f}  |diff| {d2:.2e}  (after one identical AdamW step)")
    for k in nets: print(f"  {k:6s} s/step best {best[k]:.4f}  (runs: {', '.join(f'{v:.4f}' for v in times[k])})")
    ratio, med = best['reprod'] / best['peft'], statistics.median(times['reprod']) / statistics.median(times['peft'])
    print(f"  STEP-TIME RATIO reprod / PEFT ({kind}): {ratio:.3f} best of {a.repeats} (target <= 1.0; ratio of medians {med:.3f})")
    return dict(loss_diff_step1=d1, loss_diff_step2=d2, ratio=ratio, ratio_medians=med, trainable=(n_ours, n_theirs), best=best)


def padded_difference(base, tok, a, dev):
    "Prompt tuning on a right-padded batch: reprod (last real token), reprod cls_pool='last', PEFT (last position)."
    batch = engine.to_device(make_batch(tok, a.batch_size, a.seq_len, pad_rows=True, seed=1), dev)
    with torch.no_grad():
        ours, theirs = pair('prompt_tuning', base, a.prompt_len); ours.to(dev).eval(); theirs.to(dev).eval()
        l_ours, l_peft = loss_of(ours, batch, False).item(), loss_of(theirs, batch, True).item()
        ours.config.cls_pool = 'last'
        l_last = loss_of(ours, batch, False).item()
    print(f"\n== prompt tuning on a right-padded batch (odd rows end with {a.seq_len // 4} pads)")
    print(f"  reprod (pools the last real token) {l_ours:.6f}; reprod cls_pool='last' {l_last:.6f}; PEFT (pools the last position) {l_peft:.6f}")
    print(f"  cls_pool='last' reproduces PEFT: |diff| {abs(l_last - l_peft):.2e}; the default differs by {abs(l_ours - l_peft):.2e} (PEFT pools pad tokens)")
    return dict(padded_default_vs_peft=abs(l_ours - l_peft), padded_last_vs_peft=abs(l_last - l_peft))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--device', default='cpu'); ap.add_argument('--batch-size', type=int, default=8)
    ap.add_argument('--seq-len', type=int, default=128); ap.add_argument('--prompt-len', type=int, default=10)
    ap.add_argument('--lr', type=float, default=1e-3); ap.add_argument('--steps', type=int, default=2, help='steps per timed repeat')
    ap.add_argument('--repeats', type=int, default=5); ap.add_argument('--threads', type=int, default=None)
    ap.add_argument('--only', default='prompt_tuning,ptuning_v2,padded')
    a = ap.parse_args(argv)
    try: import peft
    except ModuleNotFoundError: raise SystemExit("peft_prompt_tuning: needs Hugging Face PEFT (pip install peft)") from None
    if a.threads: torch.set_num_threads(a.threads)
    dev = core.get_device(a.device)
    core.seed_everything(0)
    base, tok = models.create_lm('smollm2', 'cls', 3)
    batch = engine.to_device(make_batch(tok, a.batch_size, a.seq_len, pad_rows=False), dev)
    print(f"SmolLM2-135M classifier, {dev}, threads {torch.get_num_threads()}, peft {peft.__version__}; batch {a.batch_size} x {a.seq_len} tokens "
          f"(no padding), {a.prompt_len} virtual tokens, AdamW lr {a.lr}")
    res = {}
    for kind in ('prompt_tuning', 'ptuning_v2'):
        if kind in a.only: res[kind] = compare(kind, base, batch, a, dev)
    if 'padded' in a.only: res['padded'] = padded_difference(base, tok, a, dev)
    return res


if __name__ == '__main__':
    main()
