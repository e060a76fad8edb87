-- bf16 GEMM throughput through dq.matmul on CUDA (cuBLASLt, f32
-- accumulation). Run: build/dqbart spec/bench/matmul_gpu.lua [N] [reps] [dtype]
--   N = 4096 (an N x N x N product), reps = 50, dtype = bf16 (or f16, f32)
-- Prints TFLOP/s for bf16 out and for f32 out. An H100 SXM peaks at about
-- 990 dense bf16 TFLOP/s; cuBLAS reaches roughly 600-750 on 4096^3.
local dq = require("dqbart")
local bench = dofile(arg[0]:gsub("[^/]*$", "") .. "bench.lua")

local n = tonumber(arg[1]) or 4096
local reps = tonumber(arg[2]) or 50
local dtype = arg[3] or "bf16"

bench.need_cuda("matmul_gpu")

local a = dq.randn({ n, n }, { seed = 1, dtype = dtype, device = "cuda" })
local b = dq.randn({ n, n }, { seed = 2, dtype = dtype, device = "cuda" })
local flops = 2 * n * n * n

print(("%s GEMM %dx%dx%d on cuda:0, %d launches per timing, median of 5"):format(dtype, n, n, n, reps))
for _, out_dtype in ipairs(dtype == "f32" and { "f32" } or { dtype, "f32" }) do
  local out = dq.empty({ n, n }, { dtype = out_dtype, device = "cuda" })
  local t = bench.gpu_seconds_per_step(function() dq.matmul(a, b, { out = out }) end, reps, 5)
  print(("  out %-4s  %8.3f ms  %7.1f TFLOP/s"):format(out_dtype, t * 1e3, flops / t * 1e-12))
  out:free()
end
