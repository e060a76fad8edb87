#!/usr/bin/env python3
"""The peer of spec/bench/generate.lua: the same beam search with PyTorch +
transformers' generate.

    python spec/bench/generate_peer.py [--batch 32] [--src 512] [--new 60]
        [--beams 6] [--device cuda|cpu] [--dtype bf16|f32] [--iters 3]
        [--warmup 1] [--attn sdpa|eager] [--threads N]

The model is spec/fixtures/configs/bart_base/config.json with N(0, 0.02^2)
weights (layer norms at 1), cast to --dtype (bf16: the whole model in
bf16, as inference runs it); sources are random ids without padding.
Exactly --new tokens per source: min_length = max_length = new + 1 (EOS
banned until the last step, forced there by forced_eos_token_id); the
other settings are the config's (no_repeat_ngram_size 3,
forced_bos_token_id 0, early_stopping true), as in generate.lua. Prints
seconds per batch, new tokens per second (batch x new / time) and
sequences per second in generate.lua's format.
"""
import argparse
import os
import time

import torch
from transformers import BartConfig, BartForConditionalGeneration

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--src", type=int, default=512)
    p.add_argument("--new", type=int, default=60)
    p.add_argument("--beams", type=int, default=6)
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="bf16", choices=["bf16", "f32"])
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
    p.add_argument("--threads", type=int)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(28)
    cfg = BartConfig.from_pretrained(os.path.join(HERE, "..", "fixtures", "configs", "bart_base"))
    cfg._attn_implementation = a.attn
    model = BartForConditionalGeneration(cfg)
    with torch.no_grad():
        for name, t in model.named_parameters():
            if "layer_norm" in name and name.endswith("weight"):
                t.fill_(1.0)
            elif "layer_norm" in name:
                t.zero_()
            else:
                t.normal_(0.0, 0.02)
    dtype = torch.bfloat16 if a.dtype == "bf16" else torch.float32
    model = model.to(device=a.device, dtype=dtype).eval()
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(3, cfg.vocab_size - 1, (a.batch, a.src), generator=gen).to(a.device)
    mask = torch.ones_like(ids)
    kwargs = dict(num_beams=a.beams, min_length=a.new + 1, max_length=a.new + 1)

    def run():
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, **kwargs)
        if a.device.startswith("cuda"):
            torch.cuda.synchronize()
        return out

    print(f"bart-base ({sum(t.numel() for t in model.parameters()) / 1e6:.1f}M parameters), batch {a.batch}, "
          f"source {a.src}, {a.beams} beams, {a.new} new tokens, {a.device} {a.dtype}, transformers generate "
          f"({a.attn} attention)")
    for _ in range(a.warmup):
        run()
    times = []
    for _ in range(a.iters):
        t0 = time.perf_counter()
        out = run()
        times.append(time.perf_counter() - t0)
        assert out.shape[1] == a.new + 1, out.shape
    times.sort()
    dt = times[(len(times) - 1) // 2]
    print(f"{dt:.3f} s per batch (median of {a.iters}), {a.batch * a.new / dt:.0f} new tokens/s, "
          f"{a.batch / dt:.2f} sequences/s")


if __name__ == "__main__":
    main()
