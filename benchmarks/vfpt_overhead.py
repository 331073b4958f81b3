"""Train-step time of VFPT vs VPT-deep on the same backbone, measured in one run (target ratio <= 1.03).

    python benchmarks/vfpt_overhead.py                      # CPU: vit_small, batch 16
    python benchmarks/vfpt_overhead.py --backbone vit_base_patch16_224 --batch 64 --device cuda   # the paper's setting

Both methods go through `reprod.engine.fit` (bf16 autocast + torch.compile on CUDA), on the same cached-tensor loader,
alternating methods over several repeats. The ratio uses each method's fastest repeat (as `timeit` advises: slower
repeats measure interference from other processes, not the code); the ratio of medians is printed beside it.
"""
import argparse, statistics

import torch

from reprod import core, engine, models, vfpt
from reprod.data.images import TensorLoader


def step_time(method, args, dev, loader):
    core.seed_everything(0)
    model = vfpt.get_vfpt_model(models.create_backbone(args.backbone, img_size=args.img),
                                vfpt.method_config(method, 10, args.tokens, args.alpha))
    recipe = vfpt.vtab_recipe(0.1, 0.001, epochs=1, batch_size=args.batch)
    engine.fit(model, loader, engine.Recipe(**{**recipe.__dict__, 'max_steps': args.warmup}), device=dev, progress=False)  # warm-up / compile
    res = engine.fit(model, loader, engine.Recipe(**{**recipe.__dict__, 'max_steps': args.steps}), device=dev, progress=False)
    return res.timings['s_per_step']


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--backbone', default='vit_small_patch16_224'); ap.add_argument('--img', type=int, default=224)
    ap.add_argument('--batch', type=int, default=16); ap.add_argument('--tokens', type=int, default=10)
    ap.add_argument('--alpha', type=float, default=1.0, help='VFPT Fourier percentage (1.0 = every prompt transformed: worst case)')
    ap.add_argument('--steps', type=int, default=10); ap.add_argument('--warmup', type=int, default=3)
    ap.add_argument('--repeats', type=int, default=5); ap.add_argument('--device', default='auto')
    args = ap.parse_args(argv)
    dev = core.get_device(args.device)
    n = args.batch * max(args.steps, args.warmup)
    x = torch.randint(0, 256, (n, 3, args.img, args.img), dtype=torch.uint8); y = torch.randint(0, 10, (n,))
    loader = TensorLoader(x, y, args.batch, shuffle=True, device=dev if dev.type == 'cuda' else 'cpu')
    times = {'vpt_deep': [], 'vfpt': []}
    for r in range(args.repeats):
        for m in (times if r % 2 == 0 else reversed(list(times))):
            times[m].append(step_time(m, args, dev, loader))
    med = {m: statistics.median(t) for m, t in times.items()}
    best = {m: min(t) for m, t in times.items()}
    dn = torch.cuda.get_device_name(dev) if dev.type == 'cuda' else 'cpu'
    print(f"device {dn} | backbone {args.backbone} | batch {args.batch} | L={args.tokens} alpha={args.alpha}")
    for m, t in times.items(): print(f"  {m:9s} s/step best {best[m]:.4f} median {med[m]:.4f}  (runs: {', '.join(f'{v:.4f}' for v in t)})")
    ratio = best['vfpt'] / best['vpt_deep']
    print(f"VFPT / VPT-deep train-step time ratio: {ratio:.3f} (target <= 1.03; ratio of medians {med['vfpt'] / med['vpt_deep']:.3f})")
    return ratio


if __name__ == '__main__':
    main()
