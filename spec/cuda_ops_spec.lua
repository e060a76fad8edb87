-- CUDA backend against the CPU reference: every op runs on the same inputs
-- on both devices and the results are compared.
--
--   * exact (bit for bit): fill, arange, rand, dtype conversion, gathers,
--     transfers, and the f32 ops whose formula is the same single-rounding
--     sequence on both devices (add/sub/mul, scale/axpby, relu, dropout,
--     embedding and its backward);
--   * f32 within ~1e-5 relative: matmul (cuBLASLt with true f32 compute),
--     reductions, layernorm, softmax, GELU (libm vs CUDA erff/expf ulps);
--   * bf16/f16 storage: the CPU computes in f32 on the same (rounded)
--     inputs; the GPU's result differs by the output rounding, so the
--     tolerance is a few ulps of the storage type (stated per test).
--
-- Without a GPU the spec reports itself pending ("SKIP: ..."); with
-- DQ_DEVICE=cuda set it fails instead, so a CI job meant for a GPU cannot
-- silently pass. DQ_CUDA_SPEC_DEVICE=cpu runs the comparisons with the CPU
-- on both sides (a dry run that checks the spec itself on machines without
-- a GPU; bf16/f16 compute tests are skipped then, the CPU computes in f32).
local ffi = require("ffi")
local dq = require("dqbart")
local cuda_skip = require("cuda_skip")
local raw_bytes = require("tensor_diff").raw_bytes

local DEVICE, ON_GPU = cuda_skip.device, cuda_skip.on_gpu

if ON_GPU and dq.cuda_device_count() == 0 then
  describe("CUDA ops against the CPU", function() cuda_skip.skipped() end)
  return
end

-- ---- helpers ------------------------------------------------------------------------

local FLOATS = { "f32", "bf16", "f16" }
local ALL_DTYPES = { "f32", "bf16", "f16", "i8", "i32", "i64" }

local seed_counter = 1000
local function randn(...)
  seed_counter = seed_counter + 1
  local shape = type((...)) == "table" and (...) or { ... }
  return dq.randn(shape, { seed = seed_counter })
end

-- A copy of t on the device under test (optionally in another dtype).
local function dev(t, dtype)
  return t:to(dtype or t:type(), DEVICE)
end

-- The CPU f32 values of t after rounding to dtype (the inputs the GPU sees).
local function rounded(t, dtype)
  return t:to(dtype):float()
end

-- Bit-for-bit equality of two tensors of one dtype (any devices).
local function assert_same_bits(actual, expected, what)
  assert.equal(expected:type(), actual:type(), what .. ": dtype")
  assert.same(expected:size(), actual:size(), what .. ": shape")
  local a, e = raw_bytes(actual), raw_bytes(expected)
  if a ~= e then
    local size = #e / math.max(1, tonumber(expected.numel))
    local av, ev = actual:tolist(), expected:tolist()
    for i = 1, #e do
      if a:byte(i) ~= e:byte(i) then
        local k = math.floor((i - 1) / size) + 1
        error(("%s: element %d differs: got %s, expected %s (%s)"):format(what, k, tostring(av[k]), tostring(ev[k]),
          expected:type()), 2)
      end
    end
  end
end

-- |actual - expected| <= atol + rtol * |expected| elementwise; NaN matches NaN.
local function assert_close(actual, expected, rtol, atol, what)
  assert.same(expected:size(), actual:size(), what .. ": shape")
  local av, ev = actual:tolist(), expected:tolist()
  for i = 1, #ev do
    local a, e = av[i], ev[i]
    local ok
    if e ~= e then ok = a ~= a
    elseif e == math.huge or e == -math.huge then ok = a == e
    else ok = math.abs(a - e) <= atol + rtol * math.abs(e) end
    if not ok then
      error(("%s: element %d of %d is %.9g, expected %.9g (rtol %g, atol %g)"):format(
        what, i, #ev, a, e, rtol, atol), 2)
    end
  end
end

-- Tolerances for results stored in a 16-bit float type, relative to the
-- CPU's f32 result on the same inputs: a few ulps of the storage type.
local STORE_RTOL = { f32 = 1e-5, bf16 = 1.6e-2, f16 = 2e-3 }

-- ---- creation, conversion, transfers: bit-exact ---------------------------------------

describe("CUDA tensors match the CPU bit for bit", function()
  it("fill in every dtype (rounding, truncation, saturation, NaN)", function()
    for _, dtype in ipairs(ALL_DTYPES) do
      for _, v in ipairs({ 0, 1.5, -3.7, 1e10, -1e10, 0 / 0, 1 / 3, 65520, -0.0 }) do
        local c = dq.empty({ 37 }, { dtype = dtype }):fill_(v)
        local g = dq.empty({ 37 }, { dtype = dtype, device = DEVICE }):fill_(v)
        assert_same_bits(g, c, ("fill %s with %g"):format(dtype, v))
      end
    end
  end)

  it("arange in every dtype", function()
    for _, dtype in ipairs(ALL_DTYPES) do
      assert_same_bits(dq.arange(-3.3, 1000, 0.7, { dtype = dtype, device = DEVICE }),
        dq.arange(-3.3, 1000, 0.7, { dtype = dtype }), "arange " .. dtype)
      assert_same_bits(dq.arange(0, 5000, 3, { dtype = dtype, device = DEVICE }),
        dq.arange(0, 5000, 3, { dtype = dtype }), "integer arange " .. dtype)
    end
  end)

  it("rand draws the same numbers in every float dtype", function()
    for _, dtype in ipairs(FLOATS) do
      for _, n in ipairs({ 1, 7, 4099 }) do
        local opts = { seed = 77, offset = 5, dtype = dtype }
        local c = dq.rand({ n }, opts)
        opts.device = DEVICE
        assert_same_bits(dq.rand({ n }, opts), c, ("rand %s n=%d"):format(dtype, n))
      end
    end
  end)

  it("randn draws the same numbers (Box-Muller; libm may differ in the last bit)", function()
    -- A few f32 ulps (glibc's logf/cosf/sinf against correctly rounded
    -- ones), or 1 ulp of a 16-bit type when that moves a rounding.
    local rtol = { f32 = 5e-7, bf16 = 2 ^ -7, f16 = 2 ^ -10 }
    for _, dtype in ipairs(FLOATS) do
      for _, n in ipairs({ 3, 10001 }) do
        local opts = { seed = 9, offset = 123, dtype = dtype }
        local c = dq.randn({ n }, opts)
        opts.device = DEVICE
        assert_close(dq.randn({ n }, opts), c, rtol[dtype], 1e-7, ("randn %s n=%d"):format(dtype, n))
      end
    end
  end)

  it("converts between all six dtypes with the CPU's rules", function()
    local float_values = { 0, -0.0, 1, -1, 0.5, 1 / 3, -2.7, 2.7, 127.5, 128, -128.5, -129, 255.9, 32767.5,
      65504, 65519, 65520, 1e5, -1e5, 3e38, -3e38, 1 / 0, -1 / 0, 0 / 0, 1e-8, 6e-8, 3e-8, 2 ^ -24, 2 ^ -25,
      3 * 2 ^ -26, 1e-40, -1e-45, 2 ^ 31, -2 ^ 31, 2 ^ 31 + 2 ^ 8, 1e19, -1e19, 9.2e18, -9.3e18,
      1 + 2 ^ -8, 1 + 3 * 2 ^ -8, 1 + 2 ^ -11, 1 + 3 * 2 ^ -11, 0.1, -0.1, 1234.5678 }
    local ints = ffi.new("int64_t[18]", { 0, 1, -1, 127, 128, -128, -129, 255, 256, 65504, 2147483647LL,
      2147483648LL, -2147483648LL, -2147483649LL, 9007199254740993LL, -9007199254740993LL,
      0x7fffffffffffffffLL, -0x7fffffffffffffffLL - 1 })
    local sources = {
      f32 = dq.tensor(float_values),
      i64 = dq.from_buffer(ints, { 18 }, { dtype = "i64" }),
    }
    for _, from in ipairs(ALL_DTYPES) do
      local base = (from == "f32" or from == "bf16" or from == "f16") and sources.f32 or sources.i64
      local src_cpu = base:to(from)
      local src_gpu = dev(src_cpu)
      assert_same_bits(src_gpu:cpu(), src_cpu, "round trip " .. from)
      for _, to in ipairs(ALL_DTYPES) do
        assert_same_bits(src_gpu:to(to), src_cpu:to(to), ("convert %s -> %s"):format(from, to))
        -- Across devices with a dtype change (staged, converted on arrival).
        assert_same_bits(src_cpu:to(to, DEVICE), src_cpu:to(to), ("copy cpu %s -> %s %s"):format(from, DEVICE, to))
      end
    end
  end)

  it("permute, transpose and narrow_copy for every element size", function()
    for _, dtype in ipairs({ "f32", "bf16", "i8", "i64" }) do
      -- -105 .. 104: exact in every dtype
      local c = dq.arange(-105, 105, 1, { dtype = "f32" }):to(dtype):reshape(2, 3, 5, 7)
      local g = dev(c)
      assert_same_bits(g:permute(4, 2, 1, 3), c:permute(4, 2, 1, 3), "permute " .. dtype)
      assert_same_bits(g:transpose(2, 3), c:transpose(2, 3), "transpose " .. dtype)
      assert_same_bits(g:narrow_copy(4, 3, 4), c:narrow_copy(4, 3, 4), "narrow_copy " .. dtype)
      assert_same_bits(g:narrow_copy(2, 2, 2), c:narrow_copy(2, 2, 2), "narrow_copy dim 2 " .. dtype)
    end
  end)

  it("uploads large host buffers that are changed right after the call", function()
    local n = 5 * 1024 * 1024 + 3 -- 20 MiB: several staging slots
    local buf = ffi.new("float[?]", n)
    for i = 0, n - 1 do buf[i] = i % 1000 - 500 end
    local g = dq.from_buffer(buf, { n }, { device = DEVICE })
    for i = 0, n - 1 do buf[i] = -1 end -- the upload must not see this
    local back = ffi.new("float[?]", n)
    g:to_buffer(back)
    local bad = nil
    for i = 0, n - 1 do
      if back[i] ~= i % 1000 - 500 then bad = i; break end
    end
    assert.is_nil(bad, "first wrong element")
    g:free()
  end)

  it("copies on the device, including between overlapping views", function()
    local c = dq.arange(100, { dtype = "f32" })
    local g = dev(c)
    local src, dst = g:narrow(1, 1, 90), g:narrow(1, 6, 90)
    dst:copy_(src)
    local cc = c:clone()
    cc:narrow(1, 6, 90):copy_(cc:narrow(1, 1, 90))
    assert_same_bits(g, cc, "overlapping copy")
  end)
end)

-- ---- f32 ops ------------------------------------------------------------------------------

describe("CUDA f32 ops match the CPU", function()
  local function matmul_both(a, b, opts, out_cpu, out_gpu)
    local o1 = {}
    for k, v in pairs(opts) do o1[k] = v end
    local o2 = {}
    for k, v in pairs(opts) do o2[k] = v end
    o1.out, o2.out = out_cpu, out_gpu
    return dq.matmul(dev(a), dev(b), o2), dq.matmul(a, b, o1)
  end

  it("matmul: every transpose combination, alpha and beta", function()
    local M, K, N = 33, 70, 17
    for _, ta in ipairs({ false, true }) do
      for _, tb in ipairs({ false, true }) do
        local a = randn(ta and { K, M } or { M, K })
        local b = randn(tb and { N, K } or { K, N })
        local g, c = matmul_both(a, b, { trans_a = ta, trans_b = tb })
        assert_close(g, c, 1e-5, 1e-5, ("matmul ta=%s tb=%s"):format(tostring(ta), tostring(tb)))
        local init = randn(M, N)
        g, c = matmul_both(a, b, { trans_a = ta, trans_b = tb, alpha = 0.5, beta = -1.25 }, init:clone(), dev(init))
        assert_close(g, c, 1e-5, 1e-5, "matmul with alpha, beta")
      end
    end
  end)

  it("matmul: batched a with shared b, batched a and b, transposed", function()
    for _, ta in ipairs({ false, true }) do
      for _, tb in ipairs({ false, true }) do
        local a = randn(ta and { 3, 2, 9, 5 } or { 3, 2, 5, 9 })
        local shared = randn(tb and { 6, 9 } or { 9, 6 })
        local g, c = matmul_both(a, shared, { trans_a = ta, trans_b = tb })
        assert_close(g, c, 1e-5, 1e-5, "shared b")
        local b = randn(tb and { 3, 2, 6, 9 } or { 3, 2, 9, 6 })
        g, c = matmul_both(a, b, { trans_a = ta, trans_b = tb, alpha = 2 })
        assert_close(g, c, 1e-5, 1e-5, "batched b")
      end
    end
  end)

  it("matmul: large and odd sizes, K = 0, and operands at odd addresses", function()
    local g, c = matmul_both(randn(257, 513), randn(513, 129), {})
    assert_close(g, c, 1e-5, 1e-4, "257x513x129")
    -- K = 0: out = beta * out
    local init = randn(4, 3)
    g, c = matmul_both(dq.zeros(4, 0), dq.zeros(0, 3), { beta = 2 }, init:clone(), dev(init))
    assert_close(g, c, 0, 0, "K = 0")
    -- Views one element into a buffer are only 4-byte aligned.
    local abuf, bbuf = randn(1 + 31 * 40), randn(1 + 40 * 23)
    local a_c, b_c = abuf:view(1, 31, 40), bbuf:view(1, 40, 23)
    local a_g, b_g = dev(abuf):view(1, 31, 40), dev(bbuf):view(1, 40, 23)
    local obuf = dq.zeros({ 1 + 31 * 23 }, { device = DEVICE })
    local out_g = obuf:view(1, 31, 23)
    dq.matmul(a_g, b_g, { out = out_g })
    assert_close(out_g, dq.matmul(a_c, b_c), 1e-5, 1e-5, "unaligned operands")
  end)

  it("add, sub, mul with suffix broadcasting (exact)", function()
    local big, row, scalar = randn(4, 6, 10), randn(10), randn(1)
    local mid = randn(6, 10)
    for _, name in ipairs({ "add", "sub", "mul" }) do
      local f = dq[name]
      for _, pair in ipairs({ { big, big }, { big, row }, { row, big }, { big, mid }, { mid, big }, { big, scalar },
                              { scalar, big } }) do
        local a, b = pair[1], pair[2]
        local what = ("%s %s %s"):format(name, a:shape_string(), b:shape_string())
        assert_same_bits(f(dev(a), dev(b)):cpu(), f(a, b), what)
      end
    end
  end)

  it("scale and axpby (exact)", function()
    local x, y = randn(1001), randn(1001)
    assert_same_bits(dq.scale(dev(x), -0.37):cpu(), dq.scale(x, -0.37), "scale")
    for _, beta in ipairs({ 0, 1, 0.9 }) do
      local yc, yg = y:clone(), dev(y)
      dq.axpby(yc, x, 0.3, beta)
      dq.axpby(yg, dev(x), 0.3, beta)
      assert_same_bits(yg:cpu(), yc, "axpby beta=" .. beta)
    end
  end)

  it("sum_leading, overwriting and accumulating", function()
    for _, shape in ipairs({ { 3000, 7 }, { 5, 4, 1000 }, { 64, 1 }, { 2, 3 } }) do
      local x = randn(shape)
      local tail = { shape[#shape] }
      local init = randn(tail)
      for _, acc in ipairs({ false, true }) do
        local oc, og = init:clone(), dev(init)
        dq.sum_leading(x, oc, acc)
        dq.sum_leading(dev(x), og, acc)
        assert_close(og, oc, 1e-5, 1e-4, "sum_leading " .. x:shape_string() .. (acc and " accumulate" or ""))
      end
    end
  end)

  it("gelu, relu and their backwards", function()
    local x, dy = randn(3, 1000), randn(3, 1000)
    assert_close(dq.gelu(dev(x)), dq.gelu(x), 1e-5, 1e-6, "gelu")
    assert_close(dq.gelu_backward(dev(dy), dev(x)), dq.gelu_backward(dy, x), 1e-5, 1e-6, "gelu_backward")
    -- The negative tail keeps its relative accuracy on both devices (no
    -- 1 + erf cancellation): -15 .. 5 in steps of 1/64.
    local sweep = dq.arange(-15, 5, 1 / 64, { dtype = "f32" })
    assert_close(dq.gelu(dev(sweep)), dq.gelu(sweep), 2e-5, 1e-30, "gelu tail")
    local ones = dq.ones(sweep:size())
    assert_close(dq.gelu_backward(dev(ones), dev(sweep)), dq.gelu_backward(ones, sweep), 2e-5, 1e-6,
      "gelu_backward tail")
    assert_same_bits(dq.relu(dev(x)):cpu(), dq.relu(x), "relu")
    assert_same_bits(dq.relu_backward(dev(dy), dev(x)):cpu(), dq.relu_backward(dy, x), "relu_backward")
  end)

  it("layernorm forward and backward, short rows and long rows", function()
    for _, shape in ipairs({ { 37, 64 }, { 3, 5, 1500 }, { 4, 1 } }) do
      local d = shape[#shape]
      local x = randn(shape):add(dq.full({ 1 }, 3)) -- a non-zero mean
      local w, b, dy = randn(d), randn(d), randn(shape)
      local yc, mc, rc = dq.layernorm(x, w, b, { save = true, eps = 1e-5 })
      local yg, mg, rg = dq.layernorm(dev(x), dev(w), dev(b), { save = true, eps = 1e-5 })
      local what = "layernorm " .. x:shape_string()
      assert_close(yg, yc, 1e-5, 1e-5, what)
      assert_close(mg, mc, 1e-5, 1e-6, what .. " mean")
      assert_close(rg, rc, 1e-5, 1e-6, what .. " rstd")
      local dwi, dbi = randn(d), randn(d)
      for _, acc in ipairs({ false, true }) do
        local dxc, dwc, dbc = dq.layernorm_backward(dy, x, w, mc, rc,
          { accumulate = acc, dweight = dwi:clone(), dbias = dbi:clone() })
        local dxg, dwg, dbg = dq.layernorm_backward(dev(dy), dev(x), dev(w), mg, rg,
          { accumulate = acc, dweight = dev(dwi), dbias = dev(dbi) })
        assert_close(dxg, dxc, 1e-4, 1e-5, what .. " dx")
        assert_close(dwg, dwc, 1e-4, 1e-4, what .. " dweight")
        assert_close(dbg, dbc, 1e-4, 1e-4, what .. " dbias")
      end
    end
  end)

  it("softmax with a broadcast mask, fully masked rows and long rows; backward", function()
    local x = randn(2, 3, 5, 40)
    local mask = dq.zeros(2, 1, 1, 40)
    local mv = ffi.cast("float*", mask.data)
    for j = 30, 39 do mv[j] = -1 / 0 end -- batch 1: the last 10 keys masked
    for j = 40, 79 do mv[j] = -1 / 0 end -- batch 2: only key 6 open, with a bias
    mv[45] = 0.5
    local full = dq.full({ 2, 3, 5, 40 }, -1 / 0)
    for _, case in ipairs({
      { x = x, opts = { scale = 0.125 } },
      { x = x, opts = { scale = 0.125, mask = mask } },
      { x = full, opts = {} },
      { x = randn(3, 3000), opts = { scale = 2 } },
    }) do
      local yc = dq.softmax(case.x, case.opts)
      local gopts = { scale = case.opts.scale, mask = case.opts.mask and dev(case.opts.mask) }
      local yg = dq.softmax(dev(case.x), gopts)
      local what = "softmax " .. case.x:shape_string() .. (case.opts.mask and " masked" or "")
      assert_close(yg, yc, 1e-5, 1e-7, what)
      local dy = randn(case.x:size())
      assert_close(dq.softmax_backward(dev(dy), yg, { scale = case.opts.scale }),
        dq.softmax_backward(dy, yc, { scale = case.opts.scale }), 1e-4, 1e-6, what .. " backward")
    end
  end)

  it("in place: out aliasing an input gives the out-of-place result", function()
    local x, dy = randn(6, 50), randn(6, 50)
    local w, b = randn(50), randn(50)
    local y, mean, rstd = dq.layernorm(x, w, b, { save = true })
    local dxc, dwc, dbc = dq.layernorm_backward(dy, x, w, mean, rstd)
    local dyg = dev(dy)
    local _, dwg, dbg = dq.layernorm_backward(dyg, dev(x), dev(w), dev(mean), dev(rstd), { dx = dyg })
    assert_close(dyg, dxc, 1e-4, 1e-5, "layernorm_backward dx = dy")
    assert_close(dwg, dwc, 1e-4, 1e-4, "layernorm_backward dweight with dx = dy")
    assert_close(dbg, dbc, 1e-4, 1e-4, "layernorm_backward dbias with dx = dy")
    local xg = dev(x)
    dq.softmax(xg, { out = xg, scale = 0.5 })
    assert_close(xg, dq.softmax(x, { scale = 0.5 }), 1e-5, 1e-7, "softmax out = x")
    for _, rows in ipairs({ false, true }) do
      local xr = dev(y)
      local m = dq.reduce(xr, "absmax", rows)
      local g = rows and randn(6) or dq.full({}, 3)
      dq.reduce_backward(dev(g), xr, m, "absmax", rows, xr)
      assert_close(xr, dq.reduce_backward(g, y, dq.reduce(y, "absmax", rows), "absmax", rows), 0, 0,
        "reduce_backward dx = x" .. (rows and " rows" or ""))
    end
  end)

  it("dropout forward and backward draw the CPU's mask (exact)", function()
    local x = randn(1003)
    for _, p in ipairs({ 0, 0.1, 0.5 }) do
      local opts = { seed = 5, offset = 17 }
      assert_same_bits(dq.dropout(dev(x), p, opts):cpu(), dq.dropout(x, p, opts), "dropout p=" .. p)
      assert_same_bits(dq.dropout_backward(dev(x), p, opts):cpu(), dq.dropout_backward(x, p, opts),
        "dropout_backward p=" .. p)
    end
  end)

  it("embedding and its backward with repeated ids (exact)", function()
    local weight = randn(50, 24)
    for _, idtype in ipairs({ "i32", "i64" }) do
      local ids = dq.tensor({ { 3, 7, 3, 49 }, { 0, 3, 7, 7 }, { 12, 3, 3, 3 } }, { dtype = idtype })
      assert_same_bits(dq.embedding(dev(weight), dev(ids)):cpu(), dq.embedding(weight, ids), "embedding " .. idtype)
      local dout = randn(3, 4, 24)
      local init = randn(50, 24)
      local dwc, dwg = init:clone(), dev(init)
      dq.embedding_backward(dwc, dout, ids)
      dq.embedding_backward(dwg, dev(dout), dev(ids))
      assert_same_bits(dwg:cpu(), dwc, "embedding_backward " .. idtype)
    end
    -- Odd row sizes (2-byte copy units) and many tokens.
    local w2 = randn(1000, 3)
    local id_list = {}
    for i = 1, 5000 do id_list[i] = (i * 7919) % 1000 end
    local ids = dq.tensor(id_list, { dtype = "i64" })
    assert_same_bits(dq.embedding(dev(w2), dev(ids)):cpu(), dq.embedding(w2, ids), "embedding many tokens")
    local dout = randn(5000, 3)
    local dwc, dwg = dq.zeros(1000, 3), dq.zeros({ 1000, 3 }, { device = DEVICE })
    dq.embedding_backward(dwc, dout, ids)
    dq.embedding_backward(dwg, dev(dout), dev(ids))
    assert_same_bits(dwg:cpu(), dwc, "embedding_backward many tokens")
  end)

  if ON_GPU then
    it("embedding writes zeros for out-of-range ids (no host sync to report them)", function()
      local weight = dev(randn(5, 4))
      local out = dq.embedding(weight, dq.tensor({ 1, 9, -1, 4 }, { dtype = "i64", device = DEVICE })):cpu():totable()
      assert.same({ 0, 0, 0, 0 }, out[2])
      assert.same({ 0, 0, 0, 0 }, out[3])
      assert.same(weight:cpu():totable()[5], out[4])
      -- and the backward skips them
      local dw = dq.zeros({ 5, 4 }, { device = DEVICE })
      dq.embedding_backward(dw, dq.ones({ 2, 4 }, { device = DEVICE }),
        dq.tensor({ 2, 7 }, { dtype = "i32", device = DEVICE }))
      local rows = dw:cpu():totable()
      for r = 1, 5 do assert.same(r == 3 and { 1, 1, 1, 1 } or { 0, 0, 0, 0 }, rows[r]) end
    end)
  end

  it("reductions over everything and over rows, with backward", function()
    local names = { "sum", "mean", "max", "absmax" }
    -- Ties: the maximum appears twice; the gradient goes to the first one.
    local ties = dq.tensor({ { 1, 5, -7, 5 }, { -2, -9, 9, 3 }, { 0, 0, 0, 0 } })
    for _, x in ipairs({ randn(3, 7), randn(5, 2000), randn(100003), ties }) do
      for _, name in ipairs(names) do
        for _, rows in ipairs({ false, true }) do
          local what = ("%s%s %s"):format(name, rows and " rows" or "", x:shape_string())
          local oc, og = dq.reduce(x, name, rows), dq.reduce(dev(x), name, rows)
          local rtol = (name == "sum" or name == "mean") and 1e-5 or 0
          assert_close(og, oc, rtol, rtol * 10, what)
          local dout = rows and randn(oc:size()) or dq.full({}, 1.75)
          local dxc = dq.reduce_backward(dout, x, oc, name, rows)
          local dxg = dq.reduce_backward(dev(dout), dev(x), og, name, rows)
          assert_close(dxg, dxc, 1e-6, 0, what .. " backward")
        end
      end
    end
  end)
end)

-- ---- bf16 / f16 storage -----------------------------------------------------------------------

if ON_GPU then
  describe("CUDA bf16/f16 ops match the CPU on the same rounded inputs", function()
    it("matmul into the input dtype and into f32", function()
      for _, dtype in ipairs({ "bf16", "f16" }) do
        local a, b = randn(65, 300), randn(300, 47)
        local c = dq.matmul(rounded(a, dtype), rounded(b, dtype))
        -- f32 out: products of 16-bit values are exact in f32, only the
        -- summation (tensor-core accumulation order) differs.
        local out32 = dq.empty({ 65, 47 }, { device = DEVICE })
        dq.matmul(dev(a, dtype), dev(b, dtype), { out = out32 })
        assert_close(out32, c, 1e-3, 1e-3, "matmul " .. dtype .. " -> f32")
        local g = dq.matmul(dev(a, dtype), dev(b, dtype))
        assert.equal(dtype, g:type())
        assert_close(g, c, STORE_RTOL[dtype], STORE_RTOL[dtype], "matmul " .. dtype)
        -- batched, transposed, with beta into an f32 out
        local ab, bb = randn(2, 3, 40, 16), randn(2, 3, 24, 40)
        local init = randn(2, 3, 16, 24)
        local cc = dq.matmul(rounded(ab, dtype), rounded(bb, dtype),
          { trans_a = true, trans_b = true, alpha = 0.5, beta = 2, out = init:clone() })
        local gg = dq.matmul(dev(ab, dtype), dev(bb, dtype),
          { trans_a = true, trans_b = true, alpha = 0.5, beta = 2, out = dev(init) })
        assert_close(gg, cc, 1e-3, 1e-3, "batched matmul " .. dtype .. " -> f32 with beta")
      end
    end)

    it("elementwise ops and activations", function()
      for _, dtype in ipairs({ "bf16", "f16" }) do
        local tol = STORE_RTOL[dtype]
        local x, y, bias = randn(8, 129), randn(8, 129), randn(129)
        local xr, yr, br = rounded(x, dtype), rounded(y, dtype), rounded(bias, dtype)
        local xg, yg, bg = dev(x, dtype), dev(y, dtype), dev(bias, dtype)
        -- add/mul of rounded inputs: exact in f32, then one rounding = the CPU's result rounded.
        assert_same_bits(dq.add(xg, bg):cpu(), dq.add(xr, br):to(dtype), "add " .. dtype)
        assert_same_bits(dq.mul(xg, yg):cpu(), dq.mul(xr, yr):to(dtype), "mul " .. dtype)
        assert_close(dq.gelu(xg), dq.gelu(xr), tol, tol * 0.1, "gelu " .. dtype)
        assert_close(dq.gelu_backward(yg, xg), dq.gelu_backward(yr, xr), tol, tol * 0.1, "gelu_backward " .. dtype)
        assert_same_bits(dq.relu(xg):cpu(), dq.relu(xr):to(dtype), "relu " .. dtype)
        local opts = { seed = 3, offset = 1 }
        assert_same_bits(dq.dropout(xg, 0.25, opts):cpu(), dq.dropout(xr, 0.25, opts):to(dtype), "dropout " .. dtype)
      end
    end)

    it("axpby across dtypes (x and y in different float types, exact)", function()
      local x, y = randn(999), randn(999)
      for _, xt in ipairs(FLOATS) do
        for _, yt in ipairs(FLOATS) do
          local yc = rounded(y, yt)
          dq.axpby(yc, rounded(x, xt), 0.75, 0.5)
          local yg = dev(y, yt)
          dq.axpby(yg, dev(x, xt), 0.75, 0.5)
          assert_same_bits(yg:cpu(), yc:to(yt), ("axpby x %s y %s"):format(xt, yt))
        end
      end
    end)

    it("sum_leading of bf16 into f32 and into bf16", function()
      local x = randn(4000, 33)
      local c = dq.sum_leading(rounded(x, "bf16"), dq.zeros(33))
      local g32 = dq.sum_leading(dev(x, "bf16"), dq.zeros({ 33 }, { device = DEVICE }))
      assert_close(g32, c, 1e-5, 1e-4, "sum_leading bf16 -> f32")
      local g16 = dq.sum_leading(dev(x, "bf16"), dq.zeros({ 33 }, { dtype = "bf16", device = DEVICE }))
      assert_close(g16, c, STORE_RTOL.bf16, 1e-2, "sum_leading bf16 -> bf16")
    end)

    it("layernorm of bf16 activations with f32 and bf16 parameters", function()
      for _, wdtype in ipairs({ "f32", "bf16" }) do
        local x, w, b, dy = randn(50, 768), randn(768), randn(768), randn(50, 768)
        local xr, wr, br, dyr = rounded(x, "bf16"), rounded(w, wdtype), rounded(b, wdtype), rounded(dy, "bf16")
        local yc, mc, rc = dq.layernorm(xr, wr, br, { save = true })
        local yg, mg, rg = dq.layernorm(dev(x, "bf16"), dev(w, wdtype), dev(b, wdtype), { save = true })
        assert_close(yg, yc, STORE_RTOL.bf16, 2e-2, "layernorm bf16, weights " .. wdtype)
        assert_close(mg, mc, 1e-5, 1e-5, "layernorm bf16 mean")
        assert_close(rg, rc, 1e-5, 1e-5, "layernorm bf16 rstd")
        local dxc, dwc, dbc = dq.layernorm_backward(dyr, xr, wr, mc, rc)
        local dxg, dwg, dbg = dq.layernorm_backward(dev(dy, "bf16"), dev(x, "bf16"), dev(w, wdtype), mg, rg)
        assert_close(dxg, dxc, STORE_RTOL.bf16, 5e-2, "layernorm_backward bf16 dx")
        assert.equal(wdtype, dwg:type())
        local ptol = wdtype == "f32" and 1e-4 or STORE_RTOL.bf16
        assert_close(dwg, dwc, ptol, 1e-2, "layernorm_backward dweight " .. wdtype)
        assert_close(dbg, dbc, ptol, 1e-2, "layernorm_backward dbias " .. wdtype)
      end
    end)

    it("softmax of bf16 scores with an f32 mask; backward", function()
      local x = randn(2, 4, 16, 16)
      local mask = dq.zeros(2, 1, 16, 16)
      local mv = ffi.cast("float*", mask.data)
      for i = 0, 15 do for j = i + 1, 15 do mv[i * 16 + j] = -1 / 0; mv[256 + i * 16 + j] = -1e9 end end
      local yc = dq.softmax(rounded(x, "bf16"), { mask = mask, scale = 0.25 })
      local yg = dq.softmax(dev(x, "bf16"), { mask = dev(mask), scale = 0.25 })
      assert_close(yg, yc, STORE_RTOL.bf16, 1e-3, "softmax bf16")
      local dy = randn(2, 4, 16, 16)
      local dxc = dq.softmax_backward(rounded(dy, "bf16"), rounded(yg:cpu(), "f32"), { scale = 0.25 })
      local dxg = dq.softmax_backward(dev(dy, "bf16"), yg, { scale = 0.25 })
      assert_close(dxg, dxc, STORE_RTOL.bf16, 1e-3, "softmax_backward bf16")
    end)

    it("embedding of bf16 weights and its backward from bf16 dout into f32 dweight", function()
      local w = randn(100, 64)
      local ids = dq.tensor({ 5, 99, 5, 0, 42, 5 }, { dtype = "i64" })
      assert_same_bits(dq.embedding(dev(w, "bf16"), dev(ids)):cpu(), dq.embedding(w, ids):to("bf16"),
        "embedding bf16")
      local dout = randn(6, 64)
      local dwc = dq.zeros(100, 64)
      dq.embedding_backward(dwc, rounded(dout, "bf16"), ids)
      local dwg = dq.zeros({ 100, 64 }, { device = DEVICE })
      dq.embedding_backward(dwg, dev(dout, "bf16"), dev(ids))
      assert_same_bits(dwg:cpu(), dwc, "embedding_backward bf16 dout")
    end)

    it("reductions of bf16 into f32", function()
      local x = randn(7, 3000)
      for _, name in ipairs({ "sum", "mean", "max", "absmax" }) do
        for _, rows in ipairs({ false, true }) do
          local c = dq.reduce(rounded(x, "bf16"), name, rows)
          local g = dq.reduce(dev(x, "bf16"), name, rows)
          assert.equal("f32", g:type())
          assert_close(g, c, 1e-5, 1e-4, ("%s%s bf16"):format(name, rows and " rows" or ""))
          local dout = rows and randn(7) or dq.full({}, -0.5)
          local dxc = dq.reduce_backward(dout, rounded(x, "bf16"), c, name, rows)
          local dxg = dq.reduce_backward(dev(dout), dev(x, "bf16"), g, name, rows)
          assert_close(dxg, dxc, STORE_RTOL.bf16, 1e-6, ("%s%s bf16 backward"):format(name, rows and " rows" or ""))
        end
      end
    end)
  end)

  describe("CUDA ops are deterministic", function()
    it("gives identical bits on repeated runs of the summing ops", function()
      local ids_t = {}
      for i = 1, 20000 do ids_t[i] = (i % 3 == 0) and 1 or (i * 31) % 500 end -- a very frequent id
      local ids = dq.tensor(ids_t, { dtype = "i64", device = DEVICE })
      local dout = dev(randn(20000, 64), "bf16")
      local x, dy = dev(randn(4096, 256)), dev(randn(4096, 256))
      local w = dev(randn(256))
      local _, mean, rstd = dq.layernorm(x, w, w, { save = true })
      local function run()
        local dw = dq.zeros({ 500, 64 }, { device = DEVICE })
        dq.embedding_backward(dw, dout, ids)
        local s = dq.sum_leading(x, dq.zeros({ 256 }, { device = DEVICE }))
        local _, dwl, dbl = dq.layernorm_backward(dy, x, w, mean, rstd)
        return { dw, s, dwl, dbl, dq.sum(x), dq.reduce(x, "mean", true) }
      end
      local first, second = run(), run()
      for i = 1, #first do assert_same_bits(second[i]:cpu(), first[i]:cpu(), "run " .. i) end
    end)
  end)

  describe("CUDA memory", function()
    it("reuses freed memory: 1000 tensors of 64 MiB, one at a time", function()
      dq.sync()
      local free0, total, held0 = dq.memory_info(DEVICE)
      for _ = 1, 1000 do
        local t = dq.empty({ 16 * 1024 * 1024 }, { device = DEVICE }) -- 64 MiB of f32
        t:free()
      end
      dq.sync()
      local free1, total1, held1 = dq.memory_info(DEVICE)
      assert.equal(total, total1)
      assert.equal(held0, held1)
      assert.is_true(free1 >= free0 - 256 * 1024 * 1024,
        ("free memory fell from %d to %d bytes"):format(free0, free1))
    end)

    it("fails cleanly when memory runs out and recovers", function()
      local _, total = dq.memory_info(DEVICE)
      local ok, err = pcall(dq.empty, { math.floor(total / 4) + 1024 * 1024 * 1024 }, { device = DEVICE })
      assert.is_false(ok)
      -- The pool reports cudaErrorMemoryAllocation for this, which the
      -- engine turns into its memory error naming the request.
      assert.matches("dq_tensor_empty: out of GPU memory allocating", err)
      local t = dq.ones({ 1024 }, { device = DEVICE })
      assert.equal(1024, dq.sum(t):item())
      t:free()
    end)

    it("surfaces no deferred error at the final sync", function()
      dq.sync()
    end)
  end)
end
