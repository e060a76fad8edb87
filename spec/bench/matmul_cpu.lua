-- CPU sgemm through the engine beside OpenBLAS called directly, same
-- buffers, same threads. Run: build/dqbart spec/bench/matmul_cpu.lua [N] [reps]
local ffi = require("ffi")
local dq = require("dqbart")
local bench = dofile(arg[0]:gsub("[^/]*$", "") .. "bench.lua")

local n = tonumber(arg[1]) or 1024
local reps = tonumber(arg[2]) or 20

ffi.cdef[[
void cblas_sgemm(int order, int transa, int transb, int m, int n, int k, float alpha,
                 const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc);
]]
local blas = ffi.load("openblas")
local CblasRowMajor, CblasNoTrans = 101, 111

local a = dq.randn({ n, n }, { seed = 1 })
local b = dq.randn({ n, n }, { seed = 2 })
local out = dq.zeros(n, n)

local run_engine = function() dq.matmul(a, b, { out = out }) end
local run_direct = function()
  blas.cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, ffi.cast("float*", a.data), n,
    ffi.cast("float*", b.data), n, 0, ffi.cast("float*", out.data), n)
end
-- Interleave the two so drift on a shared machine hits both alike; report
-- medians and the median of the per-pair ratios.
run_engine(); run_direct()
local te, td, ratios = {}, {}, {}
for i = 1, reps do
  te[i], td[i] = bench.timed(run_engine), bench.timed(run_direct)
  ratios[i] = te[i] / td[i]
end
local engine, direct, ratio = bench.median(te), bench.median(td), bench.median(ratios)
local flops = 2 * n * n * n
print(("sgemm %dx%dx%d, %d threads, median of %d interleaved pairs"):format(n, n, n, dq.get_num_threads(), reps))
print(("  engine (dq.matmul):   %8.3f ms  %7.1f GFLOP/s"):format(engine * 1e3, flops / engine * 1e-9))
print(("  OpenBLAS directly:    %8.3f ms  %7.1f GFLOP/s"):format(direct * 1e3, flops / direct * 1e-9))
print(("  engine / direct (median of pair ratios): %.3f"):format(ratio))
