-- Quantizing every weight of a bart-base-shaped model on CUDA, as a DQ step
-- does once per step: the f32 master weights (one parameter buffer, views
-- per tensor) into a bf16 working copy. Linear weights of the 6+6 layers
-- per tensor (dq.quant.quantize_many: a handful of launches), the shared
-- embedding [50265, 768] per row. Target: under 1 ms on an H100.
--
-- Run: build/dqbart spec/bench/quant_gpu.lua [reps] [out_dtype]
--   reps = 50, out_dtype = bf16 (or f32)
-- Prints ms per step for W-E = 2-2 (TWN) and 8-8 (Sym), for the batched
-- call and for one dq.quant.quantize per tensor, with the effective
-- bandwidth (weights read once + results written once) against the H100's
-- ~3.35 TB/s.
local dq = require("dqbart")
local bench = dofile(arg[0]:gsub("[^/]*$", "") .. "bench.lua")

local reps = tonumber(arg[1]) or 50
local out_dtype = arg[2] or "bf16"
local PEAK = 3.35e12

bench.need_cuda("quant_gpu")

-- bart-base linear weights: encoder layer q, k, v, out, fc1, fc2; decoder
-- layer the same plus cross-attention q, k, v, out.
local d, ffn, V = 768, 3072, 50265
local shapes = {}
for _ = 1, 6 do
  for _ = 1, 4 do shapes[#shapes + 1] = { d, d } end
  shapes[#shapes + 1] = { ffn, d }
  shapes[#shapes + 1] = { d, ffn }
end
for _ = 1, 6 do
  for _ = 1, 8 do shapes[#shapes + 1] = { d, d } end
  shapes[#shapes + 1] = { ffn, d }
  shapes[#shapes + 1] = { d, ffn }
end
local total = V * d
for _, s in ipairs(shapes) do total = total + s[1] * s[2] end

-- One master buffer and one working buffer, carved into views.
local master = dq.randn({ total }, { seed = 1, device = "cuda" }) * 0.05
local working = dq.empty({ total }, { dtype = out_dtype, device = "cuda" })
local ws, outs, offset = {}, {}, 0
for i, s in ipairs(shapes) do
  ws[i] = master:view(offset, s[1], s[2])
  outs[i] = working:view(offset, s[1], s[2])
  offset = offset + s[1] * s[2]
end
local emb, emb_out = master:view(offset, V, d), working:view(offset, V, d)

local out_size = out_dtype == "f32" and 4 or 2
local bytes = total * 4 + total * out_size

print(("bart-base weights: %d linear tensors + embedding [%d, %d], %.1f M values, f32 -> %s, median of 5 x %d steps")
  :format(#shapes, V, d, total / 1e6, out_dtype, reps))
for _, bits in ipairs({ 2, 8 }) do
  local batched = function()
    dq.quant.quantize_many(ws, { bits = bits, outs = outs })
    dq.quant.quantize(emb, { bits = bits, granularity = "row", out = emb_out })
  end
  local per_tensor = function()
    for i = 1, #ws do dq.quant.quantize(ws[i], { bits = bits, out = outs[i] }) end
    dq.quant.quantize(emb, { bits = bits, granularity = "row", out = emb_out })
  end
  local emb_only = function() dq.quant.quantize(emb, { bits = bits, granularity = "row", out = emb_out }) end
  for _, case in ipairs({ { "quantize_many + embedding", batched }, { "one call per tensor", per_tensor },
                          { "embedding alone (per row)", emb_only } }) do
    local t = bench.gpu_seconds_per_step(case[2], reps, 3)
    local b = case[1]:match("embedding alone") and V * d * (4 + out_size) or bytes
    print(("  %d-%d %-28s %7.3f ms  %7.1f GB/s  %5.1f%% of 3.35 TB/s"):format(bits, bits, case[1], t * 1e3,
      b / t * 1e-9, b / t / PEAK * 100))
  end
end
