#!/usr/bin/env python3
"""The peer of spec/bench/dq_step.lua: the same DQ-BART training step with
PyTorch + transformers.

    python spec/bench/dq_step_peer.py [--config base|tiny] [--batch 16]
        [--src 512] [--tgt 64] [--enc 6] [--dec 3] [--bits 2-2-8]
        [--device cuda|cpu] [--amp bf16|none] [--steps 3] [--warmup 1]
        [--threads N] [--clip 1.0] [--fused]

One step, as the DQ-BART reference trains (DQBART.md sections 1 and 4):

  - teacher: transformers' BartForConditionalGeneration (bart-base shapes,
    transformers' random initialization), eval mode, under torch.no_grad,
    eager attention, returning every hidden state and attention map;
  - student: a BartForConditionalGeneration with --enc/--dec layers copied
    from the teacher by the maximal-spacing map (dq.select's rule), in
    training mode (the config's dropout 0.1), quantized W-E-A by the PyTorch
    reimplementation of the reference's quantized BART in
    spec/fixtures/make_quant_fixtures.py (QuantizeLinear, row-wise embedding,
    quantized query/key/probabilities/values, STE with clipping); the
    quantized weights are recomputed in every forward, as the reference does,
    with the reference's f32 sums (quantize_values_f32 below);
  - loss: the task cross-entropy (the model's own, from labels) + MSE of the
    logits + the MSE of every paired encoder, decoder and cross attention
    map and hidden state + the per-sample MSE of the last encoder state
    summed over the batch, all at weight 1;
  - backward, clip_grad_norm_ (--clip; 0 turns it off), torch.optim.AdamW
    (lr 3e-5, eps 1e-6, weight decay 0; --fused for the fused kernel) and a
    linear schedule with 5% warmup.

--amp bf16 runs both forwards and the losses under torch.autocast (f32
master weights, bf16 matmuls), the way mixed-precision training runs
transformers. Random token ids, full-length sequences. Prints ms per step,
tokens per second (source + target, and target alone), the last step's
loss terms and, on CUDA, torch.cuda.max_memory_allocated over the run.
"""
import argparse
import os
import sys

import torch
import torch.nn.functional as F
from transformers import BartConfig, BartForConditionalGeneration, get_linear_schedule_with_warmup

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures"))
import make_quant_fixtures as mq  # noqa: E402  (the reference's quantized BART)
from peer_timing import seconds_per_step  # noqa: E402

CONFIGS = {
    "base": dict(vocab_size=50265, d_model=768, encoder_layers=6, decoder_layers=6, encoder_attention_heads=12,
                 decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072,
                 max_position_embeddings=1024),
    "tiny": dict(vocab_size=1000, d_model=64, encoder_layers=6, decoder_layers=6, encoder_attention_heads=4,
                 decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, max_position_embeddings=1024),
}
SHAPES = {"base": (16, 512, 64), "tiny": (2, 64, 16)}
TERMS = ["task", "logits", "enc_att", "dec_att", "crs_att", "enc_hid", "dec_hid", "enc_hid_last"]

# lib/dqbart/select.lua: the reference's maps for 6-layer stacks, else
# maximal spacing (first and last layer, the rest spread evenly, halves down).
REFERENCE_MAPS = {6: {1: [5], 2: [0, 5], 3: [0, 2, 5], 4: [0, 2, 3, 5], 5: [0, 1, 3, 4, 5], 6: [0, 1, 2, 3, 4, 5]}}


def quantize_values_f32(x, method, bits, granularity, clip):
    """The reference's quantizers (quant/utils_quant.py: SymQuantizer,
    TwnQuantizer) as it computes them, in the input's dtype. The fixture
    script's version accumulates the TWN sums in double to match the engine
    bit for bit, which costs more than the rest of a CPU step; a speed peer
    runs what the reference runs. All-zero groups (the padding row of a
    fresh embedding) give 0 instead of the reference's 0/0, at no cost."""
    xc = torch.clamp(x, -clip, clip)
    groups = xc.reshape(1, -1) if granularity == "tensor" else xc.reshape(-1, xc.shape[-1])
    if method == "sym":
        m = groups.abs().amax(dim=1, keepdim=True).clamp(min=1e-30)
        s = (2 ** (bits - 1) - 1) / m
        q = torch.round(groups * s) / s
    elif method == "twn":
        a = groups.abs()
        thres = 0.7 * a.mean(dim=1, keepdim=True)
        mask = a > thres
        alpha = (a * mask).sum(dim=1, keepdim=True) / mask.sum(dim=1, keepdim=True).clamp(min=1)
        q = alpha * (groups > thres) - alpha * (groups < -thres)
    else:
        raise ValueError(method)
    return q.reshape(x.shape)


mq.quantize_values = quantize_values_f32  # what mq.STEQuantizer.forward calls


def layer_map(n, k):
    if n in REFERENCE_MAPS and k in REFERENCE_MAPS[n]:
        return list(REFERENCE_MAPS[n][k])
    if k == 1:
        return [n - 1]
    return [(2 * i * (n - 1) + (k - 1) - 1) // (2 * (k - 1)) for i in range(k)]


def make_student(teacher, enc_map, dec_map):
    """A student copying the mapped teacher layers and every non-layer weight."""
    cfg = BartConfig(**{**teacher.config.to_dict(), "encoder_layers": len(enc_map), "decoder_layers": len(dec_map)})
    student = BartForConditionalGeneration(cfg)
    src = teacher.state_dict()
    dst = {}
    for name in student.state_dict():
        key = name
        for stack, m in (("encoder", enc_map), ("decoder", dec_map)):
            prefix = f"model.{stack}.layers."
            if name.startswith(prefix):
                i, rest = name[len(prefix):].split(".", 1)
                key = f"{prefix}{m[int(i)]}.{rest}"
        dst[name] = src[key]
    student.load_state_dict(dst)
    return student


def pairs(enc_map, dec_map, teacher_enc_layers):
    """DQBART.md section 4 (lib/dqbart/dq.lua's layer_pairs)."""
    att = lambda m: [(i, t) for i, t in enumerate(m)]  # noqa: E731
    hid = lambda m: [(0, 0)] + [(i + 1, t + 1) for i, t in enumerate(m)]  # noqa: E731
    return {"enc_att": att(enc_map), "dec_att": att(dec_map), "crs_att": att(dec_map),
            "enc_hid": hid(enc_map), "dec_hid": hid(dec_map), "enc_hid_last": [(len(enc_map), teacher_enc_layers)]}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="base", choices=sorted(CONFIGS))
    p.add_argument("--batch", type=int)
    p.add_argument("--src", type=int)
    p.add_argument("--tgt", type=int)
    p.add_argument("--enc", type=int, default=6)
    p.add_argument("--dec", type=int, default=3)
    p.add_argument("--bits", default="2-2-8")
    p.add_argument("--device", default="cuda")
    p.add_argument("--amp", default="bf16", choices=["bf16", "none"])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--fused", action="store_true", help="torch.optim.AdamW(fused=True)")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    B, S, T = (v if v is not None else d for v, d in zip((a.batch, a.src, a.tgt), SHAPES[a.config]))
    dev = a.device
    cuda = dev.startswith("cuda")

    torch.manual_seed(28)
    config = BartConfig(**CONFIGS[a.config])
    teacher = BartForConditionalGeneration._from_config(config, attn_implementation="eager").to(dev)
    teacher.eval()
    teacher.requires_grad_(False)
    tl = config.encoder_layers
    enc_map, dec_map = layer_map(tl, a.enc), layer_map(config.decoder_layers, a.dec)
    student = make_student(teacher, enc_map, dec_map).to(dev)
    w, e, act = (int(x) for x in a.bits.split("-"))
    mq.attach(student, mq.Plan(w, e, act))
    student.train()
    pr = pairs(enc_map, dec_map, tl)

    g = torch.Generator(device="cpu").manual_seed(1)
    ids = lambda cols: torch.randint(3, config.vocab_size - 1, (B, cols), generator=g).to(dev)  # noqa: E731
    batch = {"input_ids": ids(S), "attention_mask": torch.ones(B, S, dtype=torch.long, device=dev),
             "decoder_input_ids": ids(T), "decoder_attention_mask": torch.ones(B, T, dtype=torch.long, device=dev)}
    labels = ids(T)

    params = [q for q in student.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(params, lr=3e-5, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0,
                            **({"fused": True} if a.fused else {}))
    total = a.warmup + a.steps
    sched = get_linear_schedule_with_warmup(opt, int(0.05 * total), total)
    autocast = torch.autocast(device_type=dev.split(":")[0], dtype=torch.bfloat16, enabled=a.amp == "bf16")
    values = {}

    def step():
        with autocast:
            with torch.no_grad():
                t = teacher(**batch, output_attentions=True, output_hidden_states=True)
            s = student(**batch, labels=labels, output_attentions=True, output_hidden_states=True)
            terms = {"task": s.loss, "logits": F.mse_loss(s.logits, t.logits)}
            for name, s_out, t_out in (("enc_att", s.encoder_attentions, t.encoder_attentions),
                                       ("dec_att", s.decoder_attentions, t.decoder_attentions),
                                       ("crs_att", s.cross_attentions, t.cross_attentions),
                                       ("enc_hid", s.encoder_hidden_states, t.encoder_hidden_states),
                                       ("dec_hid", s.decoder_hidden_states, t.decoder_hidden_states)):
                terms[name] = sum(F.mse_loss(s_out[i], t_out[j]) for i, j in pr[name])
            i, j = pr["enc_hid_last"][0]
            diff = s.encoder_hidden_states[i].float() - t.encoder_hidden_states[j].float()
            terms["enc_hid_last"] = (diff * diff).mean(dim=(1, 2)).sum()  # per sample, summed over the batch
            loss = sum(terms[k] for k in TERMS)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, a.clip if a.clip > 0 else float("inf"))
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        values.update({k: v.detach() for k, v in terms.items()}, grad_norm=norm)

    tparams = sum(q.numel() for q in teacher.parameters())
    print(f"transformers DQ step: teacher bart-{a.config} {tl}+{config.decoder_layers} ({tparams / 1e6:.1f}M "
          f"parameters), student {len(enc_map)}+{len(dec_map)} (encoder {','.join(map(str, enc_map))}, decoder "
          f"{','.join(map(str, dec_map))}) at {a.bits}, batch {B} x (source {S}, target {T}), {dev} "
          f"{'bf16 autocast' if a.amp == 'bf16' else 'f32'}, {torch.get_num_threads()} threads")
    dt = seconds_per_step(step, a.steps, a.warmup, cuda)
    print(f"{dt * 1e3:.1f} ms/step, {B * (S + T) / dt:.0f} tokens/s (source + target), {B * T / dt:.0f} target "
          f"tokens/s")
    print("last step: " + ", ".join(f"{k} {float(values[k]):.4g}" for k in ["grad_norm"] + TERMS))
    if cuda:
        print(f"peak memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB (torch.cuda.max_memory_allocated)")


if __name__ == "__main__":
    main()
