-- Quantizers (dq.quant, engine/dqbart_quant.h): hand-computed values,
-- a naive Lua reference (f32 arithmetic emulated in double), the
-- straight-through backward, the batched entry point, determinism, and
-- CUDA against the CPU (skipped with a visible reason without a GPU).
local ffi = require("ffi")
local dq = require("dqbart")
local cuda_skip = require("cuda_skip")
local bits_of = require("tensor_diff").raw_bytes -- the storage bytes, for bit-exact comparisons
local quant = dq.quant

-- ---- helpers ------------------------------------------------------------------------

local f32buf = ffi.new("float[1]")
local function f32(v)
  f32buf[0] = v
  return f32buf[0]
end

-- Round half to even (torch.round).
local function rint(v)
  local f = math.floor(v)
  local d = v - f
  if d > 0.5 then return f + 1 elseif d < 0.5 then return f end
  return f % 2 == 0 and f or f + 1
end

local function clip(v, c)
  if v < -c then return -c elseif v > c then return c end
  return v
end

-- The reference quantizer of one group (a Lua list), every f32 operation
-- rounded as the engine rounds it.
local function ref_group(xs, method, bits, c)
  local n, out = #xs, {}
  local xc = {}
  for i = 1, n do xc[i] = clip(xs[i], c) end
  if method == "sym" then
    local m = 0
    for i = 1, n do m = math.max(m, math.abs(xc[i])) end
    local s = m == 0 and 0 or f32((2 ^ (bits - 1) - 1) / m)
    for i = 1, n do out[i] = s == 0 and 0 or f32(rint(f32(xc[i] * s)) / s) end
  elseif method == "asym" then
    local hi, lo = -math.huge, math.huge
    for i = 1, n do hi, lo = math.max(hi, xc[i]), math.min(lo, xc[i]) end
    local r, levels = f32(f32(hi - lo) + f32(1e-8)), 2 ^ bits - 1
    for i = 1, n do
      local t = f32(f32(xc[i] - lo) / r)
      t = f32(rint(f32(t * levels)) / levels)
      out[i] = f32(f32(t * r) + lo)
    end
  else
    local sum = 0
    for i = 1, n do sum = sum + math.abs(xc[i]) end
    local mean = f32(sum / n)
    if method == "bwn" then
      for i = 1, n do out[i] = xc[i] > 0 and mean or (xc[i] < 0 and -mean or 0) end
    else
      local D = f32(f32(0.7) * mean)
      local s2, k = 0, 0
      for i = 1, n do
        local a = math.abs(xc[i])
        if a > D then s2, k = s2 + a, k + 1 end
      end
      local alpha = k > 0 and f32(s2 / k) or 0
      for i = 1, n do out[i] = xc[i] > D and alpha or (xc[i] < -D and -alpha or 0) end
    end
  end
  return out
end

-- The reference over a flat list split into groups of `size`.
local function ref_quantize(flat, size, method, bits, c)
  local out = {}
  for g0 = 1, #flat, size do
    local group = {}
    for i = g0, g0 + size - 1 do group[#group + 1] = flat[i] end
    for _, v in ipairs(ref_group(group, method, bits, c)) do out[#out + 1] = v end
  end
  return out
end

local function assert_list(expected, actual, what, tol)
  assert.equal(#expected, #actual, what .. ": length")
  for i = 1, #expected do
    local e, a = expected[i], actual[i]
    local ok = (e ~= e and a ~= a) or math.abs(a - e) <= (tol or 0) * math.max(1, math.abs(e))
    if not ok then error(("%s: element %d is %.9g, expected %.9g"):format(what, i, a, e), 2) end
  end
end

local function q(x, opts) return quant.quantize(dq.tensor(x), opts):tolist() end

-- ---- hand-computed values ------------------------------------------------------------

describe("dq.quant.quantize (CPU)", function()
  it("Sym clips first, takes the max of the clipped values and rounds half to even", function()
    -- clip 1.5: -9 -> -1.5, so m = 1.5 and s = 3 / 1.5 = 2 (exact); x * s
    -- hits the ties 0.5, 1.5, 2.5, -0.5, -1.5 exactly.
    local got = q({ 0.25, 0.75, 1.25, -0.25, -0.75, 1.5, -9, 0.3 }, { method = "sym", bits = 3, clip = 1.5 })
    -- 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, -0.5 -> -0, -1.5 -> -2, 3 -> 3, -3 -> -3, 0.6 -> 1
    assert_list({ 0, 1, 1, 0, -1, 1.5, -1.5, 0.5 }, got, "sym ties")
    -- m taken before clipping (9) would give s = 1/3 and 0.75 -> round(0.25) = 0
    assert.are_not.equal(0, got[2])
  end)

  it("Sym with the reference's clip 2.5 and 8 bits", function()
    local x = { 0.1, -0.26, 3.0, -4.0, 0.5, 0.0 }
    local got = q(x, { bits = 8 })
    -- m = 2.5 after clipping, s = 127 / 2.5 = 50.8
    local s = f32(127 / 2.5)
    local want = {}
    for i, v in ipairs(x) do want[i] = f32(rint(f32(clip(v, 2.5) * s)) / s) end
    assert_list(want, got, "sym 8-bit")
    assert.equal(f32(rint(f32(0.1 * s)) / s), got[1]) -- 5.08 -> 5 -> 0.0984...
    assert.equal(2.5, got[3])
    assert.equal(-2.5, got[4])
  end)

  it("per row and per tensor differ exactly where the rows' maxima differ", function()
    local x = { { 1, 0.5, -0.25, 0 }, { 0.1, -0.05, 0.02, 0.07 } }
    local per_tensor = q(x, { method = "sym", bits = 2 }) -- s = 1 / 1
    local per_row = q(x, { method = "sym", bits = 2, granularity = "row" })
    assert_list({ 1, 0, 0, 0, 0, 0, 0, 0 }, per_tensor, "per tensor") -- 0.5 -> round(0.5) = 0
    -- row 2: m = 0.1, s = 10: 1 -> 0.1, -0.5 -> -0, 0.2 -> 0, 0.7 -> 0.1
    assert_list({ 1, 0, 0, 0, f32(1 / f32(10)), 0, 0, f32(1 / f32(10)) }, per_row, "per row")
  end)

  it("all-zero rows and tensors quantize to zeros, never NaN", function()
    local zero_row = { { 0.5, -1, 2, 0.25 }, { 0, 0, 0, 0 } }
    for _, method in ipairs({ "sym", "twn", "bwn", "asym" }) do
      local bits = ({ sym = 8, twn = 2, bwn = 1, asym = 4 })[method]
      local got = q(zero_row, { method = method, bits = bits, granularity = "row" })
      assert_list({ 0, 0, 0, 0 }, { got[5], got[6], got[7], got[8] }, method .. " zero row")
      local all = q({ { 0, 0 }, { 0, 0 } }, { method = method, bits = bits })
      assert_list({ 0, 0, 0, 0 }, all, method .. " zero tensor")
    end
  end)

  it("TWN: D = 0.7 mean|x|, alpha = mean of the entries above D (hand-computed)", function()
    -- row 1 clipped: {0.1, -0.26, 2.5, -2.5, 0.5, 0}: mean 0.97667, D 0.68367 -> alpha 2.5
    -- row 2: sum 5.1, mean 0.85, D 0.595: 0.5 stays 0 -> alpha 2
    -- row 3: sum 4.25, mean 0.70833, D 0.49583: all but 0 above -> alpha 4.25 / 5 = 0.85
    local x = { { 0.1, -0.26, 3.0, -4.0, 0.5, 0 }, { 2, -2, 0.5, -0.5, 0.1, 0 }, { 1, 1, 1, 0.6, -0.65, 0 } }
    local got = q(x, { bits = 2, granularity = "row" })
    local a3 = f32((1 + 1 + 1 + f32(0.6) + f32(0.65)) / 5)
    assert_list({ 0, 0, 2.5, -2.5, 0, 0, 2, -2, 0, 0, 0, 0, a3, a3, a3, a3, -a3, 0 }, got, "twn rows")
    assert.near(0.85, a3, 1e-6)
  end)

  it("TWN per tensor pools every row into one D and one alpha", function()
    -- clipped {0.1,-0.26,2.5,-2.5,0.5,0, 0,0,0,0,0,0}: mean 5.86/12 = 0.48833,
    -- D = 0.34183: above are 2.5, -2.5, 0.5 -> alpha = 5.5 / 3
    local got = q({ { 0.1, -0.26, 3.0, -4.0, 0.5, 0 }, { 0, 0, 0, 0, 0, 0 } }, { bits = 2 })
    local a = f32(5.5 / 3)
    assert_list({ 0, 0, a, -a, a, 0, 0, 0, 0, 0, 0, 0 }, got, "twn tensor")
  end)

  it("BWN: mean |clipped x| times the sign", function()
    assert_list({ 1, -1, 1, 0 }, q({ 1, -3, 0.5, 0 }, { method = "bwn", bits = 1 }), "bwn")
  end)

  it("asymmetric min-max (the reference's AsymQuantizer formula)", function()
    -- clipped {0, 1, 2, 2.5}: lo 0, range 2.5, levels 3: t = {0, 1.2, 2.4, 3} -> {0, 1, 2, 3}
    local got = q({ 0, 1, 2, 3 }, { method = "asym", bits = 2 })
    assert_list({ 0, f32(f32(1 / 3) * 2.5), f32(f32(2 / 3) * 2.5), 2.5 }, got, "asym")
    -- a constant group maps to itself (no 0/0)
    assert_list({ 0.5, 0.5, 0.5 }, q({ 0.5, 0.5, 0.5 }, { method = "asym", bits = 3 }), "asym constant")
  end)

  it("per (batch, head): each [T, S] slice of [B, H, T, S] has its own scale", function()
    local x = dq.randn({ 2, 3, 4, 5 }, { seed = 7 })
    local heads = quant.quantize(x, { bits = 4, granularity = "head" })
    for b = 1, 2 do
      for h = 1, 3 do
        local slice = x:select(1, b):select(1, h)
        local want = quant.quantize(slice, { bits = 4 }):tolist()
        assert_list(want, heads:select(1, b):select(1, h):tolist(), ("head %d,%d"):format(b, h))
      end
    end
    assert.has_error(function() quant.quantize(dq.zeros(3, 4), { granularity = "head" }) end)
  end)

  it("auto picks TWN at 2 bits, BWN at 1, Sym above", function()
    local x = dq.randn({ 6, 9 }, { seed = 3 })
    local function same(a, b) assert_list(a:tolist(), b:tolist(), "auto") end
    same(quant.quantize(x, { bits = 2, granularity = "row" }), quant.quantize(x, { method = "twn", bits = 2, granularity = "row" }))
    same(quant.quantize(x, { bits = 1 }), quant.quantize(x, { method = "bwn", bits = 1 }))
    same(quant.quantize(x, { bits = 8 }), quant.quantize(x, { method = "sym", bits = 8 }))
  end)

  it("matches the naive reference on random tensors (all methods, both granularities)", function()
    local x = dq.randn({ 37, 53 }, { seed = 11 }) * 1.7 -- some values beyond +-2.5
    local flat = x:tolist()
    for _, case in ipairs({ { "sym", 8 }, { "sym", 4 }, { "sym", 2 }, { "twn", 2 }, { "bwn", 1 }, { "asym", 8 },
                            { "asym", 3 } }) do
      local method, bits = case[1], case[2]
      for _, g in ipairs({ "tensor", "row" }) do
        local got = quant.quantize(x, { method = method, bits = bits, granularity = g }):tolist()
        local want = ref_quantize(flat, g == "row" and 53 or #flat, method, bits, 2.5)
        assert_list(want, got, ("%s(%d) per %s"):format(method, bits, g))
      end
    end
  end)

  it("a large tensor (several parallel blocks per group) matches the reference", function()
    local x = dq.randn({ 300, 257 }, { seed = 12 }) -- 77100 elements: 5 blocks of 16384
    local flat = x:tolist()
    for _, case in ipairs({ { "twn", 2 }, { "sym", 8 }, { "bwn", 1 } }) do
      local got = quant.quantize(x, { method = case[1], bits = case[2] }):tolist()
      assert_list(ref_quantize(flat, #flat, case[1], case[2], 2.5), got, case[1] .. " large")
    end
  end)

  it("clip is a parameter (and inf disables clipping)", function()
    -- clipped {4, -4, 2}: m = 4, s = 0.75: 2 -> round(1.5) = 2 -> 2 / 0.75
    assert_list({ 4, -4, f32(2 / 0.75) }, q({ 4, -5, 2 }, { method = "sym", bits = 3, clip = 4 }), "clip 4")
    local got = q({ 9, -3, 0 }, { method = "sym", bits = 8, clip = math.huge })
    assert.near(9, got[1], 1e-5)
  end)

  it("writes in place and into a given out", function()
    local x = dq.randn({ 5, 8 }, { seed = 21 })
    local want = quant.quantize(x, { bits = 2, granularity = "row" }):tolist()
    local out = dq.empty({ 5, 8 })
    quant.quantize(x, { bits = 2, granularity = "row", out = out })
    assert_list(want, out:tolist(), "given out")
    quant.quantize(x, { bits = 2, granularity = "row", out = x })
    assert_list(want, x:tolist(), "in place")
  end)

  it("is deterministic: the same bits twice, and with 1 or several threads", function()
    local x = dq.randn({ 512, 300 }, { seed = 5 })
    local threads = dq.get_num_threads()
    local a = quant.quantize(x, { bits = 2 })
    local b = quant.quantize(x, { bits = 2 })
    dq.set_num_threads(1)
    local c = quant.quantize(x, { bits = 2 })
    dq.set_num_threads(threads)
    assert.equal(bits_of(a), bits_of(b))
    assert.equal(bits_of(a), bits_of(c))
  end)

  it("rejects bad specs with clear messages", function()
    local x = dq.ones(2, 3)
    local function err(opts, pattern)
      local ok, msg = pcall(quant.quantize, x, opts)
      assert.is_false(ok)
      assert.matches(pattern, msg)
    end
    err({ method = "twn", bits = 3 }, "twn quantizer, which is 2%-bit")
    err({ method = "sym", bits = 1 }, "expected 2%.%.16")
    err({ bits = 17 }, "auto method takes")
    err({ clip = 0 }, "clip = 0")
    err({ method = "ternary" }, "unknown quantizer method 'ternary'")
    err({ granularity = "column" }, "unknown quantizer granularity")
    local ok, msg = pcall(quant.quantize, x, { out = dq.empty(3, 2) })
    assert.is_false(ok)
    assert.matches("expected the shape of x", msg)
  end)
end)

-- ---- the batched entry point ------------------------------------------------------------

describe("dq.quant.quantize_many (CPU)", function()
  it("equals one call per tensor, each with its own statistics", function()
    local xs = { dq.randn({ 8, 16 }, { seed = 1 }), dq.randn({ 3, 5 }, { seed = 2 }) * 3,
                 dq.randn({ 40 }, { seed = 3 }) * 0.01, dq.zeros(0, 4) }
    for _, g in ipairs({ "tensor", "row" }) do
      for _, bits in ipairs({ 2, 8 }) do
        local outs = quant.quantize_many(xs, { bits = bits, granularity = g })
        for i, x in ipairs(xs) do
          assert_list(quant.quantize(x, { bits = bits, granularity = g }):tolist(), outs[i]:tolist(),
            ("tensor %d, %d bits per %s"):format(i, bits, g))
        end
      end
    end
  end)

  it("rejects outputs that overlap another tensor", function()
    local buf = dq.randn({ 20 }, { seed = 4 })
    local a, b = buf:narrow(1, 1, 10), buf:narrow(1, 6, 10)
    local ok, msg = pcall(quant.quantize_many, { a, b }, { bits = 8, outs = { b, a } })
    assert.is_false(ok)
    assert.matches("overlaps", msg)
    -- an output over another tensor's input
    local c, d = buf:narrow(1, 1, 5), buf:narrow(1, 11, 5)
    ok, msg = pcall(quant.quantize_many, { c, d }, { bits = 8, outs = { dq.empty(5), c } })
    assert.is_false(ok)
    assert.matches("outs%[1%] %[5%] f32 cpu overlaps xs%[0%]", msg)
    -- in place, each on itself, is fine
    local want = quant.quantize(d, { bits = 8 }):tolist()
    quant.quantize_many({ c, d }, { bits = 8, outs = { c, d } })
    assert_list(want, d:tolist(), "in place in a batch")
  end)
end)

-- ---- straight-through backward ----------------------------------------------------------------

describe("dq.quant.backward (STE with clipping)", function()
  it("passes dy where -c < x < c and zeroes it elsewhere", function()
    local x = dq.tensor({ -3, -2.5, -2.4999, 0, 2.49, 2.5, 3 })
    local dy = dq.tensor({ 1, 2, 3, 4, 5, 6, 7 })
    assert_list({ 0, 0, 3, 4, 5, 0, 0 }, quant.backward(dy, x):tolist(), "mask")
    assert_list({ 1, 2, 3, 4, 5, 6, 7 }, quant.backward(dy, x, { clip = 10 }):tolist(), "clip 10")
  end)

  it("accumulates into the latent gradient", function()
    local x, dy = dq.tensor({ -3, 1, 3 }), dq.tensor({ 1, 1, 1 })
    local dx = dq.tensor({ 10, 20, 30 })
    quant.backward(dy, x, { out = dx, accumulate = true })
    assert_list({ 10, 21, 30 }, dx:tolist(), "accumulate")
    assert.has_error(function() quant.backward(dy, x, { accumulate = true }) end)
  end)
end)

-- ---- the W-E-A shorthand ----------------------------------------------------------------------------

describe("dq.quant.parse", function()
  it("parses W-E-A", function()
    assert.same({ weight = 2, embedding = 2, activation = 8 }, quant.parse("2-2-8"))
    assert.same({ weight = 8, embedding = 8, activation = 8 }, quant.parse("8-8-8"))
    assert.same({ weight = 4, embedding = 32, activation = 16 }, quant.parse("4-32-16"))
    assert.equal("2-2-8", quant.format(quant.parse("2-2-8")))
  end)

  it("explains what is wrong", function()
    local function err(s, pattern)
      local ok, msg = pcall(quant.parse, s)
      assert.is_false(ok)
      assert.matches(pattern, msg)
    end
    err("2-2", "expected three bit widths")
    err("2-2-8-8", "expected three bit widths")
    err("2-x-8", "embedding bits 'x'")
    err("9-8-8", "weight bits 9")
    err("8-8-1", "activation bits 1")
    err("2-2-8.5", "activation bits '8.5'")
    err(28, "expected a W%-E%-A string")
  end)

  it("plans each role as the reference quantizes it", function()
    local p = quant.plan("2-2-8")
    assert.same({ method = "auto", bits = 2, granularity = "tensor", clip = 2.5 }, p.weight)
    assert.same({ method = "auto", bits = 2, granularity = "row", clip = 2.5 }, p.embedding)
    assert.same({ method = "sym", bits = 8, granularity = "tensor", clip = 2.5 }, p.activation)
    assert.is_false(quant.plan("8-32-32").embedding)
  end)
end)

-- ---- CUDA against the CPU --------------------------------------------------------------------------

-- DQ_CUDA_SPEC_DEVICE=cpu runs these comparisons with the CPU on both sides
-- (a dry run of the spec itself on machines without a GPU; the bf16/f16
-- cases are skipped then, the CPU computes in f32).
local DEVICE, ON_GPU = cuda_skip.device, cuda_skip.on_gpu

describe("dq.quant on CUDA against the CPU", function()
  if ON_GPU and cuda_skip.skipped() then return end

  -- Shapes exercising both CUDA paths: rows (fused, warp and block per
  -- group) and large groups (multi-pass), several tensors per launch.
  local shapes = { { 7, 33 }, { 50, 768 }, { 6, 3000 }, { 300, 800 }, { 2, 3, 40, 500 } }

  local function compare(x, opts, dtype, out_dtype, what)
    local xr = x:to(dtype):float() -- the values the GPU sees
    local want = quant.quantize(xr, opts)
    local out = dq.empty(x:size(), { dtype = out_dtype, device = DEVICE })
    quant.quantize(x:to(dtype, DEVICE), { method = opts.method, bits = opts.bits, granularity = opts.granularity,
                                          out = out })
    -- Same f32 operations, one rounding to the output dtype.
    assert_list(want:to(out_dtype):float():tolist(), out:float():tolist(), what)
  end

  it("every method and granularity, f32 in and out, bit for bit", function()
    for si, shape in ipairs(shapes) do
      local x = dq.randn(shape, { seed = 100 + si }) * 1.5
      for _, case in ipairs({ { "sym", 8 }, { "twn", 2 }, { "bwn", 1 }, { "asym", 4 } }) do
        for _, g in ipairs({ "tensor", "row", #shape >= 3 and "head" or nil }) do
          compare(x, { method = case[1], bits = case[2], granularity = g }, "f32", "f32",
            ("%s per %s on %s"):format(case[1], g, table.concat(shape, "x")))
        end
      end
    end
  end)

  it("bf16 and f16 inputs, and f32 master weights into a bf16 working copy", function()
    if not ON_GPU then return pending("the CPU computes f32 only") end
    local x = dq.randn({ 64, 768 }, { seed = 9 })
    for _, pair in ipairs({ { "bf16", "bf16" }, { "f16", "f16" }, { "f32", "bf16" }, { "bf16", "f32" } }) do
      for _, g in ipairs({ "tensor", "row" }) do
        compare(x, { bits = 2, granularity = g }, pair[1], pair[2], ("twn %s -> %s per %s"):format(pair[1], pair[2], g))
        compare(x, { bits = 8, granularity = g }, pair[1], pair[2], ("sym %s -> %s per %s"):format(pair[1], pair[2], g))
      end
    end
  end)

  it("quantize_many over many tensors (sub-batches, both paths) equals the CPU", function()
    local xs, cpu = {}, {}
    -- 50 multi-pass and 50 fused tensors: more than one launch's worth
    -- (40 jobs) on each path.
    for i = 1, 100 do
      local shape = i % 2 == 0 and { 30, 700 } or { 13 + i, 64 }
      cpu[i] = dq.randn(shape, { seed = 500 + i })
      xs[i] = cpu[i]:to(DEVICE)
    end
    for _, g in ipairs({ "tensor", "row" }) do
      local outs = quant.quantize_many(xs, { bits = 2, granularity = g })
      local want = quant.quantize_many(cpu, { bits = 2, granularity = g })
      for i = 1, #xs do assert_list(want[i]:tolist(), outs[i]:tolist(), ("tensor %d per %s"):format(i, g)) end
    end
  end)

  it("is deterministic on the GPU", function()
    local x = dq.randn({ 1000, 3000 }, { seed = 8, device = DEVICE })
    local a = quant.quantize(x, { bits = 2 })
    local b = quant.quantize(x, { bits = 2 })
    assert.equal(bits_of(a:cpu()), bits_of(b:cpu()))
  end)

  it("the backward matches, with mixed dtypes and accumulation", function()
    local x = dq.randn({ 1000 }, { seed = 1 }) * 3
    local dy = dq.randn({ 1000 }, { seed = 2 })
    local want = quant.backward(dy, x)
    assert_list(want:tolist(), quant.backward(dy:to(DEVICE), x:to(DEVICE)):tolist(), "f32")
    if not ON_GPU then return end
    local acc = dq.ones(1000, { device = DEVICE })
    quant.backward(dy:bf16():to(DEVICE), x:to(DEVICE), { out = acc, accumulate = true })
    local want_acc = quant.backward(dy:bf16():float(), x, { out = dq.ones(1000), accumulate = true })
    assert_list(want_acc:tolist(), acc:tolist(), "bf16 dy into f32 dx")
  end)
end)
