-- Beam search throughput at the bart-base shape (random weights).
--
--   dqbart spec/bench/generate.lua [options]
--     --batch N --src S --new N --beams K          [32, 512, 60, 6]
--     --device cpu|cuda --dtype f32|bf16           [cpu, f32]
--     --iters N --warmup N                         [3, 1]
--     --threads N                                  CPU threads [all]
--     --quant W-E-A                                run quantized (e.g. 2-2-8) [off]
--
-- The model is spec/fixtures/configs/bart_base/config.json (dq_model_init)
-- initialized as transformers does (N(0, 0.02^2) weights, biases 0, layer
-- norms 1, as the peer's model is); sources are random ids
-- without padding. Exactly --new tokens are generated per source:
-- min_length = max_length = new + 1 bans EOS until the last step, where
-- forced_eos_token_id forces it. Everything else is the config's
-- generation settings (no_repeat_ngram_size 3, forced_bos_token_id 0,
-- early_stopping true), which spec/bench/generate_peer.py sets too.
-- Reported: new tokens per second (batch x new / time, the encoder
-- included), sequences per second, and one timed run's split into
-- encoder, decoder steps and search (that run synchronizes every step).
--
-- On 2 CPU cores the full shape takes minutes: --batch 2 --src 128 gives a
-- quick number. On the GPU host:
--   dqbart spec/bench/generate.lua --device cuda --dtype bf16
--   python spec/bench/generate_peer.py --device cuda --dtype bf16
local dq = require("dqbart")
local bench = dofile(arg[0]:gsub("[^/]*$", "") .. "bench.lua")
local engine = require("dqbart.generate_engine")

local opts = bench.options(arg or {}, { batch = 32, src = 512, new = 60, beams = 6, device = "cpu", dtype = "f32",
  iters = 3, warmup = 1 })
if opts.device == "cuda" then bench.need_cuda("generate.lua") end
if opts.threads then dq.set_num_threads(opts.threads) end

local here = arg[0]:gsub("[^/]*$", "")
local m = dq.model.new(here .. "../fixtures/configs/bart_base", { device = opts.device, dtype = opts.dtype })
require("dqbart.teacher").init_weights(m, 28, 0.02, 1) -- transformers' initialization
m:eval()
if opts.quant then m:set_quant(opts.quant) end

local B, S, N = opts.batch, opts.src, opts.new
local r = dq.rand({ B, S }, { seed = 1 })
local ids = dq.add(dq.scale(r, 50265 - 4), dq.full({ 1 }, 3)):to("i64", opts.device)
local mask = dq.ones({ B, S }, { dtype = "i64", device = opts.device })
local gen = engine.options(m, { num_beams = opts.beams, min_length = N + 1, max_length = N + 1 })
local ws = engine.workspace()

local function run()
  local seqs, lens, scores = engine.run(m, ids, mask, gen, ws)
  local L = dq.max(lens:float()):item()
  seqs:free()
  lens:free()
  scores:free()
  return L
end

local info = m:info()
io.write(("bart-base (%.1fM parameters), batch %d, source %d, %d beams, %d new tokens, %s %s%s, %d threads\n"):format(
  info.trainable_numel / 1e6, B, S, opts.beams, N, opts.device, opts.dtype,
  opts.quant and (", quantized " .. opts.quant) or "", dq.get_num_threads()))
for _ = 1, opts.warmup do run() end
local times = {}
for k = 1, opts.iters do
  local L
  times[k] = bench.timed(function() L = run() end)
  assert(L == N + 1, ("expected %d tokens per sequence, got %d"):format(N + 1, L))
end
local dt = bench.median(times)
io.write(("%.3f s per batch (median of %d), %.0f new tokens/s, %.2f sequences/s; workspace %.2f GiB\n"):format(
  dt, opts.iters, B * N / dt, B / dt, ws:bytes() / 2 ^ 30))
ws:timing(true)
run()
local st = ws:stats()
io.write(("one synchronized run: encoder %.3f s, %d decoder steps %.3f s (%.2f ms/step), search %.3f s\n"):format(
  st.encoder_seconds, st.steps, st.decoder_seconds, 1000 * st.decoder_seconds / math.max(st.steps, 1),
  st.search_seconds))
ws:free()
m:free()
