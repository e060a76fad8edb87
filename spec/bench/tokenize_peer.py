#!/usr/bin/env python3
"""The peer of spec/bench/tokenize.lua: the same work with Hugging Face's
`tokenizers` (pip install tokenizers). Prints one JSON object.

  tokenize_peer.py --tokenizer DIR --text FILE [--repeat N]
      encode every line of FILE (without its newline) with add_special_tokens,
      in one encode_batch call (and encode_batch_fast when the library has it);
      reports the best MB/s of N runs, the number of ids and their sum (to
      check both sides produced the same ids).
  tokenize_peer.py --train FILE --vocab-size N --min-frequency F
      trains a byte-level BPE as ByteLevelBPETokenizer does; reports seconds.

Threads: the library uses all cores; RAYON_NUM_THREADS=1 makes it use one
(set by the caller before this process starts).
"""
import argparse
import json
import os
import time

import tokenizers
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers


def bench_encode(args):
    path = args.tokenizer
    if os.path.isdir(path):
        path = os.path.join(path, "tokenizer.json")
    tok = Tokenizer.from_file(path)
    with open(args.text, encoding="utf-8") as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    mb = sum(len(l.encode("utf-8")) for l in lines) / 1e6
    result = {"tokenizers": tokenizers.__version__, "mb": mb, "lines": len(lines)}
    for name in ("encode_batch", "encode_batch_fast"):
        fn = getattr(tok, name, None)
        if fn is None:
            continue
        best = None
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            encs = fn(lines, add_special_tokens=True)
            dt = time.perf_counter() - t0
            best = dt if best is None else min(best, dt)
        ids = [e.ids for e in encs]
        result[name] = {"seconds": best, "mb_per_s": mb / best, "ids": sum(len(i) for i in ids),
                        "id_sum": sum(sum(i) for i in ids)}
    print(json.dumps(result))


def bench_train(args):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = [AddedToken(s, special=True, normalized=False, lstrip=(s == "<mask>"))
                for s in ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]]
    trainer = trainers.BpeTrainer(vocab_size=args.vocab_size, min_frequency=args.min_frequency, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    t0 = time.perf_counter()
    tok.train([args.train], trainer)
    dt = time.perf_counter() - t0
    out = args.out
    if out:
        os.makedirs(out, exist_ok=True)
        tok.model.save(out)
    print(json.dumps({"tokenizers": tokenizers.__version__, "train_seconds": dt}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer")
    ap.add_argument("--text")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--train")
    ap.add_argument("--vocab-size", type=int, default=8000)
    ap.add_argument("--min-frequency", type=int, default=2)
    ap.add_argument("--out", help="with --train: save vocab.json + merges.txt here")
    args = ap.parse_args()
    if args.train:
        bench_train(args)
    else:
        bench_encode(args)


if __name__ == "__main__":
    main()
