-- The fused losses on CUDA at the DQ-BART training shape: batch 16, source
-- 512, target 64, vocabulary 50265 (bart-base: 12 heads, d_model 768).
-- Target: at least 70% of the H100's ~3.35 TB/s.
--
-- Run: build/dqbart spec/bench/loss_gpu.lua [reps] [dtype]
--   reps = 20, dtype = bf16 (inputs and gradients; or f32)
-- Bytes counted once each: inputs read, gradient written (and read too when
-- added). Every loss writes or adds its gradient; values stay on the GPU.
local dq = require("dqbart")
local bench = dofile(arg[0]:gsub("[^/]*$", "") .. "bench.lua")

local reps = tonumber(arg[1]) or 20
local dtype = arg[2] or "bf16"
local PEAK = 3.35e12
local B, S, T, V, H, D = 16, 512, 64, 50265, 12, 768

bench.need_cuda("loss_gpu")

local size = dtype == "f32" and 4 or 2
local seed = 0
local function randn(shape, k)
  seed = seed + 1
  return (dq.randn(shape, { seed = seed, device = "cuda" }) * (k or 1)):to(dtype)
end

local ids = {}
for i = 1, B * T do ids[i] = (i % 13 == 0) and -100 or (i * 7919) % V end
local labels = dq.tensor(ids, { dtype = "i64", device = "cuda" }):reshape(B, T)

local value = dq.zeros({}, { device = "cuda" })

-- What this GPU's memory actually gives a plain device-to-device copy of
-- 512 MiB (read + write): the attainable rate, beside the H100's nominal
-- one (an H200's is 4.8 TB/s).
local copy_rate
do
  local src = dq.zeros({ 256 * 2 ^ 20 }, { dtype = "bf16", device = "cuda" })
  local dst = dq.zeros({ 256 * 2 ^ 20 }, { dtype = "bf16", device = "cuda" })
  copy_rate = 2 * 512 * 2 ^ 20 / bench.gpu_seconds_per_step(function() dst:copy_(src) end, 10, 2)
  src:free(); dst:free()
end

local function report(name, numel, inputs, add, step)
  local t = bench.gpu_seconds_per_step(step, reps, 3)
  local bytes = numel * size * (inputs + 1 + (add and 1 or 0))
  print(("  %-42s %7.3f ms %7.1f GB/s %5.1f%% of 3.35 TB/s %5.1f%% of copy"):format(name, t * 1e3,
    bytes / t * 1e-9, bytes / t / PEAK * 100, bytes / t / copy_rate * 100))
end

print(("fused losses, %s, B=%d S=%d T=%d V=%d, median of 5 x %d; device copy %.0f GB/s"):format(dtype, B, S, T,
  V, reps, copy_rate * 1e-9))
do
  local s, t = randn({ B, T, V }, 3), randn({ B, T, V }, 3)
  local g = dq.zeros({ B, T, V }, { dtype = dtype, device = "cuda" })
  local n = B * T * V
  report("cross-entropy (grad written)", n, 1, false, function()
    dq.loss.cross_entropy(s, labels, { grad = g, value = value })
  end)
  report("cross-entropy, smoothing 0.1 (added)", n, 1, true, function()
    dq.loss.cross_entropy(s, labels, { grad = g, value = value, accumulate = true, label_smoothing = 0.1 })
  end)
  report("KL, T = 2 (grad written)", n, 2, false, function()
    dq.loss.kl(s, t, { grad = g, value = value, temperature = 2, labels = labels })
  end)
  report("MSE logits (grad added)", n, 2, true, function()
    dq.loss.mse(s, t, { grad = g, value = value, accumulate = true })
  end)
  s:free(); t:free(); g:free()
end
for _, case in ipairs({
  { "MSE encoder attention [B,H,S,S]", { B, H, S, S }, "mse" },
  { "MSE cross attention [B,H,T,S]", { B, H, T, S }, "mse" },
  { "MSE encoder hidden [B,S,D]", { B, S, D }, "mse" },
  { "per-sample MSE enc_hid_last [B,S,D]", { B, S, D }, "mse_per_sample" },
}) do
  local s, t = randn(case[2]), randn(case[2])
  local g = dq.zeros(case[2], { dtype = dtype, device = "cuda" })
  local n = tonumber(s.numel)
  report(case[1] .. " (added)", n, 2, true, function()
    dq.loss[case[3]](s, t, { grad = g, value = value, accumulate = true })
  end)
  s:free(); t:free(); g:free()
end
