-- bf16 GEMM throughput through dq.matmul on CUDA (cuBLASLt, f32
-- accumulation). Run: build/dqbart spec/bench/matmul_gpu.lua [N] [reps] [dtype]
--   N = 4096 (an N x N x N product), reps = 50, dtype = bf16 (or f16, f32)
-- Prints TFLOP/s for bf16 out and for f32 out. An H100 SXM peaks at about
-- 990 dense bf16 TFLOP/s; cuBLAS reaches roughly 600-750 on 4096^3.
local ffi = require("ffi")
local dq = require("dqbart")

local n = tonumber(arg[1]) or 4096
local reps = tonumber(arg[2]) or 50
local dtype = arg[3] or "bf16"

if dq.cuda_device_count() == 0 then
  io.stderr:write(("matmul_gpu: no CUDA device (built with CUDA: %s)\n"):format(
    dq.built_with_cuda() and "yes" or "no"))
  os.exit(1)
end

ffi.cdef("int clock_gettime(int, void *);")
local function wall()
  local ts = ffi.new("struct { long sec; long nsec; }")
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.sec) + tonumber(ts.nsec) * 1e-9
end

local a = dq.randn({ n, n }, { seed = 1, dtype = dtype, device = "cuda" })
local b = dq.randn({ n, n }, { seed = 2, dtype = dtype, device = "cuda" })
local flops = 2 * n * n * n

-- Median over `rounds` timings of `reps` back-to-back launches each, timed
-- between two syncs (so launch overhead overlaps the GPU work, as in a step).
local function measure(out)
  local run = function() dq.matmul(a, b, { out = out }) end
  for _ = 1, 5 do run() end -- warm-up: plan cache, clocks
  dq.sync()
  local times = {}
  for r = 1, 5 do
    local t0 = wall()
    for _ = 1, reps do run() end
    dq.sync()
    times[r] = (wall() - t0) / reps
  end
  table.sort(times)
  return times[3]
end

print(("%s GEMM %dx%dx%d on cuda:0, %d launches per timing, median of 5"):format(dtype, n, n, n, reps))
for _, out_dtype in ipairs(dtype == "f32" and { "f32" } or { dtype, "f32" }) do
  local out = dq.empty({ n, n }, { dtype = out_dtype, device = "cuda" })
  local t = measure(out)
  print(("  out %-4s  %8.3f ms  %7.1f TFLOP/s"):format(out_dtype, t * 1e3, flops / t * 1e-12))
  out:free()
end
