-- Forward + backward throughput of a BART training step (random weights).
--
--   dqbart spec/bench/bart_step.lua [options]
--     --config base|large   bart-base (140M) or bart-large (400M) shapes [base]
--     --batch N --src S --tgt T                         [16, 512, 64]
--     --device cpu|cuda --dtype f32|bf16                [cpu, f32]
--     --steps N --warmup N                              [3, 1]
--     --threads N                                       CPU threads [all]
--     --dropout                                         keep the config's dropout 0.1 [off]
--
-- A step is: forward in training mode, token cross-entropy with its
-- gradient, backward into the gradient buffer (no optimizer). Reported:
-- seconds per step and tokens per second (source + target tokens, and
-- target tokens alone). On 2 CPU cores the full bart-base shape takes a
-- while; --batch 2 gives a quick number. On the GPU host:
--   dqbart spec/bench/bart_step.lua --device cuda --dtype bf16
-- and compare with spec/bench/bart_step_peer.py (PyTorch + transformers).
local dq = require("dqbart")
local bench = dofile(arg[0]:gsub("[^/]*$", "") .. "bench.lua")

local opts = bench.options(arg or {}, { config = "base", batch = 16, src = 512, tgt = 64, device = "cpu",
  dtype = "f32", steps = 3, warmup = 1 }, { dropout = true })
local cfg = assert(bench.BART_CONFIGS[opts.config], "--config must be base, large or tiny")
if opts.threads then dq.set_num_threads(opts.threads) end

local m = dq.model.new(cfg, { device = opts.device, dtype = opts.dtype })
local info = m:info()
-- transformers' initialization (N(0, 0.02^2) weights, biases 0, layer norms 1)
require("dqbart.teacher").init_weights(m, 28, 0.02, 1)
m:train()
if not opts.dropout then m:set_dropout({ dropout = 0, attention_dropout = 0, activation_dropout = 0 }) end

local B, S, T = opts.batch, opts.src, opts.tgt
local function ids(rows, cols, seed)
  -- uniform in [3, vocab - 1): no special tokens
  local r = dq.rand({ rows, cols }, { seed = seed })
  return dq.add(dq.scale(r, cfg.vocab_size - 4), dq.full({ 1 }, 3)):to("i64", opts.device)
end
local batch = {
  input_ids = ids(B, S, 1),
  attention_mask = dq.ones({ B, S }, { dtype = "i64", device = opts.device }),
  decoder_input_ids = ids(B, T, 2),
  decoder_attention_mask = dq.ones({ B, T }, { dtype = "i64", device = opts.device }),
}
local labels = ids(B, T, 3)

local function step(k)
  m:set_rng(28, k * 1000000)
  m:forward(batch)
  dq.model.cross_entropy(m:output("logits"), labels, { grad = m:output_grad("logits") })
  m:backward()
end

io.write(("bart-%s (%.1fM parameters), batch %d x (source %d, target %d), %s %s, %d threads\n"):format(
  opts.config, info.trainable_numel / 1e6, B, S, T, opts.device, opts.dtype, dq.get_num_threads()))
m:zero_grad()
for k = 1, opts.warmup do step(k) end
if opts.device ~= "cpu" then dq.sync(opts.device) end
io.write(("arena %.2f GiB after warmup\n"):format(m:info().arena_bytes / 2 ^ 30))
local t0 = bench.wall()
for k = 1, opts.steps do step(opts.warmup + k) end
if opts.device ~= "cpu" then dq.sync(opts.device) end
local dt = (bench.wall() - t0) / opts.steps
io.write(("%.3f s/step, %.0f tokens/s (source + target), %.0f target tokens/s\n"):format(
  dt, B * (S + T) / dt, B * T / dt))
m:free()
