#!/usr/bin/env python3
"""The peer of spec/bench/bart_step.lua: the same training step (forward,
token cross-entropy, backward; no optimizer) with PyTorch + transformers.

    python spec/bench/bart_step_peer.py [--config base|large] [--batch 16]
        [--src 512] [--tgt 64] [--device cuda|cpu] [--dtype bf16|f32]
        [--steps 3] [--warmup 1] [--attn eager|sdpa] [--dropout]

bf16 runs under torch.autocast (f32 master weights, bf16 matmuls), the
way mixed-precision training runs transformers. Random N(0, 0.02^2)
weights, random token ids, full-length sequences, dropout off unless
--dropout. Prints seconds per step and tokens per second (source + target,
and target alone) in the format bart_step.lua uses.
"""
import argparse

import torch
from transformers import BartConfig, BartForConditionalGeneration

from peer_timing import seconds_per_step

CONFIGS = {
    "base": dict(vocab_size=50265, d_model=768, encoder_layers=6, decoder_layers=6, encoder_attention_heads=12,
                 decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072,
                 max_position_embeddings=1024),
    "large": dict(vocab_size=50265, d_model=1024, encoder_layers=12, decoder_layers=12, encoder_attention_heads=16,
                  decoder_attention_heads=16, encoder_ffn_dim=4096, decoder_ffn_dim=4096,
                  max_position_embeddings=1024),
}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="base", choices=sorted(CONFIGS))
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--src", type=int, default=512)
    p.add_argument("--tgt", type=int, default=64)
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="bf16", choices=["bf16", "f32"])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--attn", default="eager", choices=["eager", "sdpa"])
    p.add_argument("--dropout", action="store_true")
    p.add_argument("--threads", type=int)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    drop = 0.1 if a.dropout else 0.0
    config = BartConfig(**CONFIGS[a.config], dropout=drop, attention_dropout=drop, activation_dropout=drop)
    torch.manual_seed(28)
    model = BartForConditionalGeneration._from_config(config, attn_implementation=a.attn).to(a.device)
    model.train()
    B, S, T = a.batch, a.src, a.tgt
    g = torch.Generator(device="cpu").manual_seed(1)
    batch = {
        "input_ids": torch.randint(3, config.vocab_size - 1, (B, S), generator=g).to(a.device),
        "attention_mask": torch.ones(B, S, dtype=torch.long, device=a.device),
        "decoder_input_ids": torch.randint(3, config.vocab_size - 1, (B, T), generator=g).to(a.device),
        "decoder_attention_mask": torch.ones(B, T, dtype=torch.long, device=a.device),
        "labels": torch.randint(3, config.vocab_size - 1, (B, T), generator=g).to(a.device),
    }
    autocast = torch.autocast(device_type=a.device.split(":")[0], dtype=torch.bfloat16, enabled=a.dtype == "bf16")

    def step():
        with autocast:
            loss = model(**batch).loss
        loss.backward()

    params = sum(p.numel() for p in model.parameters())
    print(f"transformers bart-{a.config} ({params / 1e6:.1f}M parameters), batch {B} x (source {S}, target {T}), "
          f"{a.device} {a.dtype}{' autocast' if a.dtype == 'bf16' else ''}, attention {a.attn}, {torch.get_num_threads()} threads")
    model.zero_grad(set_to_none=False)
    dt = seconds_per_step(step, a.steps, a.warmup, a.device.startswith("cuda"))
    print(f"{dt:.3f} s/step, {B * (S + T) / dt:.0f} tokens/s (source + target), {B * T / dt:.0f} target tokens/s")
    if a.device.startswith("cuda"):
        print(f"peak memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
