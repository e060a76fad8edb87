-- Fused losses (dq.loss, engine/dqbart_loss.h): values and gradients
-- against naive double-precision Lua references, finite-difference checks
-- of every gradient, the write/add modes, determinism, and CUDA against
-- the CPU (skipped with a visible reason without a GPU).
local dq = require("dqbart")
local gradcheck = require("gradcheck")
local cuda_skip = require("cuda_skip")
local bytes = require("tensor_diff").raw_bytes -- the storage bytes, for bit-exact comparisons
local loss = dq.loss

-- ---- references (double precision, plain Lua) ---------------------------------------

local function rows_of(t)
  local flat, V = t:tolist(), t:size(-1)
  local rows = {}
  for r = 1, #flat / V do
    local row = {}
    for j = 1, V do row[j] = flat[(r - 1) * V + j] end
    rows[r] = row
  end
  return rows, V
end

local function lse(row, scale)
  local m = -math.huge
  for _, v in ipairs(row) do m = math.max(m, v * scale) end
  local s = 0
  for _, v in ipairs(row) do s = s + math.exp(v * scale - m) end
  return m + math.log(s)
end

-- value, flat gradient (weight 1) of the cross-entropy
local function ref_ce(logits, labels, ignore, eps)
  local rows, V = rows_of(logits)
  local ys = labels:tolist()
  local count, total, grad = 0, 0, {}
  for r, y in ipairs(ys) do if y ~= ignore then count = count + 1 end end
  for r, row in ipairs(rows) do
    local y = ys[r]
    if y == ignore then
      for j = 1, V do grad[#grad + 1] = 0 end
    else
      local l, sum = lse(row, 1), 0
      for _, v in ipairs(row) do sum = sum + v end
      total = total + l - (1 - eps) * row[y + 1] - eps / V * sum
      for j = 1, V do
        grad[#grad + 1] = (math.exp(row[j] - l) - eps / V - (j == y + 1 and 1 - eps or 0)) / count
      end
    end
  end
  return count > 0 and total / count or 0, grad
end

local function ref_kl(s, t, labels, ignore, T)
  local srows, V = rows_of(s)
  local trows = rows_of(t)
  local ys = labels and labels:tolist()
  local count, total, grad = 0, 0, {}
  for r = 1, #srows do if not ys or ys[r] ~= ignore then count = count + 1 end end
  for r = 1, #srows do
    if ys and ys[r] == ignore then
      for j = 1, V do grad[#grad + 1] = 0 end
    else
      local ls, lt = lse(srows[r], 1 / T), lse(trows[r], 1 / T)
      for j = 1, V do
        local lp, lq = trows[r][j] / T - lt, srows[r][j] / T - ls
        total = total + T * T * math.exp(lp) * (lp - lq)
        grad[#grad + 1] = T * (math.exp(lq) - math.exp(lp)) / count
      end
    end
  end
  return total / count, grad
end

local function ref_mse(s, t, per_sample)
  local a, b = s:tolist(), t:tolist()
  local n = #a
  local divisor = per_sample and n / s:size(1) or n
  local total, grad = 0, {}
  for i = 1, n do
    total = total + (a[i] - b[i]) ^ 2
    grad[i] = 2 * (a[i] - b[i]) / divisor
  end
  return total / divisor, grad
end

local function assert_close(expected, actual, rtol, atol, what)
  assert.equal(#expected, #actual, what .. ": length")
  for i = 1, #expected do
    local e, a = expected[i], actual[i]
    if not (math.abs(a - e) <= atol + rtol * math.abs(e)) then
      error(("%s: element %d is %.9g, expected %.9g"):format(what, i, a, e), 2)
    end
  end
end

local function scaled(list, k)
  local out = {}
  for i, v in ipairs(list) do out[i] = v * k end
  return out
end

local seed = 40
local function randn(shape, k)
  seed = seed + 1
  return dq.randn(shape, { seed = seed }) * (k or 1)
end

local function labels_for(shape, V, ignore_every, dtype)
  local n = 1
  for _, d in ipairs(shape) do n = n * d end
  local ys = {}
  for i = 1, n do ys[i] = (ignore_every and i % ignore_every == 0) and -100 or (i * 7) % V end
  return dq.tensor(ys, { dtype = dtype or "i64" }):reshape(shape)
end

-- ---- cross-entropy ---------------------------------------------------------------------

describe("dq.loss.cross_entropy (CPU)", function()
  local logits = randn({ 2, 3, 11 }, 2)
  local labels = labels_for({ 2, 3 }, 11, 4)

  for _, eps in ipairs({ 0, 0.1 }) do
    it(("matches the reference (label smoothing %g), gradient weighted"):format(eps), function()
      local want_v, want_g = ref_ce(logits, labels, -100, eps)
      local v, g = loss.cross_entropy(logits, labels, { grad = true, weight = 0.7, label_smoothing = eps })
      assert.equal(0, v.ndim)
      assert.near(want_v, v:item(), 1e-5 * math.abs(want_v))
      assert_close(scaled(want_g, 0.7), g:tolist(), 1e-5, 1e-7, "dlogits")
    end)

    it(("has the gradient finite differences give (label smoothing %g)"):format(eps), function()
      gradcheck.check{
        inputs = { x = logits:clone() }, wrt = { "x" },
        forward = function(i) return (loss.cross_entropy(i.x, labels, { label_smoothing = eps })) end,
        backward = function(i, dout)
          local _, g = loss.cross_entropy(i.x, labels, { grad = true, weight = dout:item(), label_smoothing = eps })
          return { x = g }
        end,
      }
    end)
  end

  it("takes i32 labels and any ignore index (e.g. the pad id)", function()
    local l32 = labels:int()
    local v1 = loss.cross_entropy(logits, l32)
    local v2 = loss.cross_entropy(logits, labels)
    assert.equal(v2:item(), v1:item())
    local pad = dq.tensor({ { 1, 3, 1 }, { 0, 1, 5 } }, { dtype = "i64" })
    local want = ref_ce(logits, pad, 1, 0)
    assert.near(want, loss.cross_entropy(logits, pad, { ignore_index = 1 }):item(), 1e-5 * want)
  end)

  it("writes zeros on ignored rows, leaves them alone when adding", function()
    local _, g = loss.cross_entropy(logits, labels, { grad = true })
    local gl = g:tolist()
    for j = 1, 11 do assert.equal(0, gl[3 * 11 + j]) end -- position 4 is ignored
    local base = dq.full({ 2, 3, 11 }, 5)
    loss.cross_entropy(logits, labels, { grad = base, accumulate = true, weight = 2 })
    local bl = base:tolist()
    for j = 1, 11 do assert.equal(5, bl[3 * 11 + j]) end
    assert_close(scaled(gl, 2), (function()
      local d = {}
      for i, v in ipairs(bl) do d[i] = v - 5 end
      return d
    end)(), 1e-5, 1e-6, "added")
  end)

  it("adds to the value with add_value, and gives 0 when every position is ignored", function()
    local v = dq.full({}, 1.5)
    loss.cross_entropy(logits, labels, { value = v, add_value = true })
    assert.near(1.5 + ref_ce(logits, labels, -100, 0), v:item(), 1e-5)
    local none = dq.full({ 2, 3 }, -100, { dtype = "i64" })
    local v0, g0 = loss.cross_entropy(logits, none, { grad = true })
    assert.equal(0, v0:item())
    for _, x in ipairs(g0:tolist()) do assert.equal(0, x) end
  end)

  it("may write the gradient over the logits (in place)", function()
    local x = logits:clone()
    local want_v, want_g = ref_ce(logits, labels, -100, 0.1)
    local v = loss.cross_entropy(x, labels, { grad = x, label_smoothing = 0.1 })
    assert.near(want_v, v:item(), 1e-5 * want_v)
    assert_close(want_g, x:tolist(), 1e-5, 1e-7, "in place")
  end)

  it("agrees with the simple dq.model.cross_entropy where that exists", function()
    if not (dq.model and dq.model.cross_entropy) then return pending("dq.model.cross_entropy not present") end
    local ok, simple = pcall(dq.model.cross_entropy, logits, labels, { ignore_index = -100 })
    if not ok then return pending("dq.model.cross_entropy failed: " .. tostring(simple)) end
    local simple_v = dq.is_tensor(simple) and simple:item() or simple
    assert.near(simple_v, loss.cross_entropy(logits, labels):item(), 1e-5 * simple_v)
  end)

  it("rejects bad labels and shapes with clear messages", function()
    local function err(fn, pattern)
      local ok, msg = pcall(fn)
      assert.is_false(ok)
      assert.matches(pattern, msg)
    end
    err(function() loss.cross_entropy(logits, dq.tensor({ { 0, 11, 2 }, { 1, 2, 3 } }, { dtype = "i64" })) end,
      "label 11 at position 1 is outside the vocabulary %[0, 11%)")
    err(function() loss.cross_entropy(logits, labels:reshape(6)) end, "must have the shape of logits")
    err(function() loss.cross_entropy(logits, labels:float()) end, "expected i32 or i64")
    err(function() loss.cross_entropy(logits, labels, { label_smoothing = 1.5 }) end, "label_smoothing")
    err(function() loss.cross_entropy(logits, labels, { grad = dq.zeros(2, 3, 10) }) end, "expected the shape")
    err(function() loss.cross_entropy(logits, labels, { grad = dq.undefined(), accumulate = true }) end,
      "not allocated")
  end)
end)

-- ---- MSE ------------------------------------------------------------------------------------

describe("dq.loss.mse and mse_per_sample (CPU)", function()
  local s, t = randn({ 3, 4, 5 }), randn({ 3, 4, 5 })

  for _, per_sample in ipairs({ false, true }) do
    local name = per_sample and "mse_per_sample" or "mse"
    local fn = loss[name]

    it(name .. " matches the reference", function()
      local want_v, want_g = ref_mse(s, t, per_sample)
      local v, g = fn(s, t, { grad = true, weight = 3 })
      assert.near(want_v, v:item(), 1e-6 * want_v)
      assert_close(scaled(want_g, 3), g:tolist(), 1e-6, 1e-8, name .. " grad")
    end)

    it(name .. " has the gradient finite differences give", function()
      gradcheck.check{
        inputs = { s = s:clone(), t = t }, wrt = { "s" },
        forward = function(i) return (fn(i.s, i.t)) end,
        backward = function(i, dout)
          local _, g = fn(i.s, i.t, { grad = true, weight = dout:item() })
          return { s = g }
        end,
      }
    end)
  end

  it("the per-sample form is the sum over samples of each sample's MSE", function()
    local total = 0
    for b = 1, 3 do total = total + loss.mse(s:select(1, b), t:select(1, b)):item() end
    assert.near(total, loss.mse_per_sample(s, t):item(), 1e-6 * total)
  end)

  it("adds weight x gradient into a given buffer", function()
    local g = dq.ones(3, 4, 5)
    loss.mse(s, t, { grad = g, accumulate = true, weight = 0.5 })
    local _, want = ref_mse(s, t, false)
    local got = g:tolist()
    for i = 1, #want do assert.near(1 + 0.5 * want[i], got[i], 1e-6) end
  end)

  it("rejects mismatched inputs", function()
    assert.has_error(function() loss.mse(s, randn({ 3, 4, 6 })) end)
    assert.has_error(function() loss.mse(dq.zeros(0), dq.zeros(0)) end)
  end)
end)

-- ---- KL ------------------------------------------------------------------------------------------

describe("dq.loss.kl (CPU)", function()
  local s, t = randn({ 2, 3, 9 }, 2), randn({ 2, 3, 9 }, 2)
  local labels = labels_for({ 2, 3 }, 9, 3)

  for _, T in ipairs({ 1, 2.5 }) do
    it(("matches T^2 KL(teacher || student) at temperature %g"):format(T), function()
      for _, lab in ipairs({ false, true }) do
        local want_v, want_g = ref_kl(s, t, lab and labels or nil, -100, T)
        local v, g = loss.kl(s, t, { grad = true, temperature = T, labels = lab and labels or nil, weight = 1.3 })
        assert.near(want_v, v:item(), 1e-5 * math.abs(want_v) + 1e-7)
        assert_close(scaled(want_g, 1.3), g:tolist(), 1e-5, 1e-7, "grad")
      end
    end)

    it(("has the gradient finite differences give (T = %g)"):format(T), function()
      gradcheck.check{
        inputs = { s = s:clone(), t = t }, wrt = { "s" },
        forward = function(i) return (loss.kl(i.s, i.t, { temperature = T, labels = labels })) end,
        backward = function(i, dout)
          local _, g = loss.kl(i.s, i.t, { grad = true, temperature = T, labels = labels, weight = dout:item() })
          return { s = g }
        end,
      }
    end)
  end

  it("is zero with a zero gradient when student and teacher agree", function()
    local v, g = loss.kl(s, s:clone(), { grad = true, temperature = 2 })
    assert.near(0, v:item(), 1e-6)
    for _, x in ipairs(g:tolist()) do assert.near(0, x, 1e-7) end
  end)
end)

-- ---- determinism ----------------------------------------------------------------------------------

describe("fused losses are deterministic on the CPU", function()
  it("the same bits twice and with 1 or several threads", function()
    local threads = dq.get_num_threads()
    local x, y = randn({ 96, 5003 }, 3), randn({ 96, 5003 }, 3)
    local labels = labels_for({ 96 }, 5003, 5)
    local function run()
      local v1, g1 = loss.cross_entropy(x, labels, { grad = true, label_smoothing = 0.1 })
      local v2, g2 = loss.kl(x, y, { grad = true, temperature = 2 })
      local v3, g3 = loss.mse(x, y, { grad = true })
      return { bytes(v1), bytes(g1), bytes(v2), bytes(g2), bytes(v3), bytes(g3) }
    end
    local a, b = run(), run()
    dq.set_num_threads(1)
    local c = run()
    dq.set_num_threads(threads)
    for i = 1, #a do
      assert.equal(a[i], b[i], "run twice, output " .. i)
      assert.equal(a[i], c[i], "one thread, output " .. i)
    end
  end)
end)

-- ---- CUDA against the CPU ------------------------------------------------------------------------

-- DQ_CUDA_SPEC_DEVICE=cpu runs these comparisons with the CPU on both sides
-- (a dry run of the spec itself on machines without a GPU; bf16 cases are
-- skipped then, the CPU computes in f32).
local DEVICE, ON_GPU = cuda_skip.device, cuda_skip.on_gpu

describe("dq.loss on CUDA against the CPU", function()
  if ON_GPU and cuda_skip.skipped() then return end

  -- Row lengths: short (256-thread rows), a vocabulary cached in shared
  -- memory, and one too long for the cache in f32 (three global passes).
  local widths = { 37, 50265, 70001 }
  local TOL = { f32 = { 2e-5, 1e-6 }, bf16 = { 2e-5, 2e-6 }, f16 = { 2e-5, 2e-6 } }

  local function gpu_vs_cpu(name, dtype, run)
    -- run(device, dtype) -> value, grad (grad f32)
    local cv, cg = run("cpu")
    local gv, gg = run(DEVICE)
    local tol = TOL[dtype]
    assert.near(cv:item(), gv:item(), tol[1] * math.abs(cv:item()) + 1e-7, name .. " value")
    assert_close(cg:tolist(), gg:float():tolist(), 1e-4, tol[2], name .. " grad")
  end

  for _, V in ipairs(widths) do
    for _, dtype in ipairs({ "f32", "bf16" }) do
      it(("cross-entropy and KL, V = %d, %s inputs, f32 gradients"):format(V, dtype), function()
        if dtype ~= "f32" and not ON_GPU then return pending("the CPU computes f32 only") end
        local rows = V > 1000 and 6 or 40
        local x = randn({ rows, V }, 3):to(dtype):float()
        local y = randn({ rows, V }, 3):to(dtype):float()
        local labels = labels_for({ rows }, V, 4)
        gpu_vs_cpu("ce", dtype, function(dev)
          local g = dq.zeros(rows, V, { device = dev })
          local xin = dev == "cpu" and x or x:to(dtype, DEVICE)
          local v = loss.cross_entropy(xin, labels:to(dev), { grad = g, label_smoothing = 0.1, weight = 2 })
          return v, g
        end)
        gpu_vs_cpu("kl", dtype, function(dev)
          local g = dq.zeros(rows, V, { device = dev })
          local xin = dev == "cpu" and x or x:to(dtype, DEVICE)
          local yin = dev == "cpu" and y or y:to(dtype, DEVICE)
          local v = loss.kl(xin, yin, { grad = g, temperature = 2, labels = labels:to(dev) })
          return v, g
        end)
      end)
    end
  end

  it("MSE and per-sample MSE on f32 and bf16, gradients added", function()
    for _, dtype in ipairs(ON_GPU and { "f32", "bf16" } or { "f32" }) do
      local s = randn({ 4, 300, 777 }):to(dtype):float()
      local t = randn({ 4, 300, 777 }):to(dtype):float()
      for _, name in ipairs({ "mse", "mse_per_sample" }) do
        gpu_vs_cpu(name, dtype, function(dev)
          local g = dq.ones(4, 300, 777, { device = dev })
          local si = dev == "cpu" and s or s:to(dtype, DEVICE)
          local ti = dev == "cpu" and t or t:to(dtype, DEVICE)
          local v = loss[name](si, ti, { grad = g, accumulate = true, weight = 0.3 })
          return v, g
        end)
      end
    end
  end)

  it("MSE over a count that is not a multiple of 8, on aligned and unaligned views", function()
    -- The GPU reads chunks of 8 elements, 16 bytes at a time when every
    -- pointer is aligned: a view one element in takes the element-wise path,
    -- and the last chunk here is partial either way.
    local n = 100003
    for _, dtype in ipairs(ON_GPU and { "f32", "bf16" } or { "f32" }) do
      local s = randn({ n + 1 }):to(dtype):float()
      local t = randn({ n + 1 }):to(dtype):float()
      for _, first in ipairs({ 1, 2 }) do
        gpu_vs_cpu(("mse, view from element %d"):format(first), dtype, function(dev)
          local g = dq.ones(n + 1, { device = dev })
          local si = dev == "cpu" and s or s:to(dtype, DEVICE)
          local ti = dev == "cpu" and t or t:to(dtype, DEVICE)
          local v = loss.mse(si:narrow(1, first, n), ti:narrow(1, first, n), { grad = g:narrow(1, first, n),
            accumulate = true, weight = 0.3 })
          return v, g
        end)
      end
    end
  end)

  it("gradients in the inputs' bf16, written and added, match the CPU's within bf16 rounding", function()
    -- bf16 inputs with bf16 gradients take the GPU's 16-byte shared-memory
    -- path in the gradient pass; adding reads the old gradient 16 bytes at a
    -- time. (f32 on both sides in a CPU dry run.)
    local dt = ON_GPU and "bf16" or "f32"
    local rows, V = 8, 50265
    local x, y = randn({ rows, V }, 3):to(dt):float(), randn({ rows, V }, 3):to(dt):float()
    local labels = labels_for({ rows }, V, 5)
    local cases = {
      ce = function(a, _, lab, g, acc)
        return loss.cross_entropy(a, lab, { grad = g, accumulate = acc, label_smoothing = 0.1 })
      end,
      kl = function(a, b, lab, g, acc)
        return loss.kl(a, b, { grad = g, accumulate = acc, temperature = 2, labels = lab })
      end,
    }
    for name, run in pairs(cases) do
      for _, acc in ipairs({ false, true }) do
        local start = (randn({ rows, V }, 1e-5)):to(dt):float()
        local cg = start:clone()
        run(x, y, labels, cg, acc)
        local gg = start:to(dt, DEVICE)
        run(x:to(dt, DEVICE), y:to(dt, DEVICE), labels:to(DEVICE), gg, acc)
        assert.equal(dt, gg:type())
        assert_close(cg:tolist(), gg:float():cpu():tolist(), 8e-3, 1e-9,
          ("%s gradient, %s"):format(name, acc and "added" or "written"))
      end
    end
  end)

  it("bf16 gradients, and the same bits twice on the GPU", function()
    if not ON_GPU then return pending("the CPU computes f32 only") end
    local x = randn({ 64, 50265 }, 3):bf16():to(DEVICE)
    local y = randn({ 64, 50265 }, 3):bf16():to(DEVICE)
    local labels = labels_for({ 64 }, 50265, 7):to(DEVICE)
    local function run()
      local v1, g1 = loss.cross_entropy(x, labels, { grad = true })
      local v2, g2 = loss.kl(x, y, { grad = true, temperature = 2 })
      local v3, g3 = loss.mse(x, y, { grad = true })
      assert.equal("bf16", g1:type())
      return { bytes(v1:cpu()), bytes(g1:cpu()), bytes(v2:cpu()), bytes(g2:cpu()), bytes(v3:cpu()), bytes(g3:cpu()) }
    end
    local a, b = run(), run()
    for i = 1, #a do assert.equal(a[i], b[i], "output " .. i) end
    local cv = loss.cross_entropy(x:float():cpu(), labels:cpu())
    local gv = loss.cross_entropy(x, labels)
    assert.near(cv:item(), gv:item(), 2e-5 * cv:item())
  end)

  it("many more rows than the GPU has SMs, the gradient in place too", function()
    -- Several waves of row blocks over long bf16 rows (copied into shared
    -- memory by cp.async). Cross-entropy rewrites the label's own gradient
    -- element after the gradient pass, which must hold in place as well.
    local dt = ON_GPU and "bf16" or "f32"
    local rows, V = 700, 5003
    local x = randn({ rows, V }, 3):to(dt):float()
    local y = randn({ rows, V }, 3):to(dt):float()
    local labels = labels_for({ rows }, V, 9)
    local xg, yg, lg = x:to(dt, DEVICE), y:to(dt, DEVICE), labels:to(DEVICE)
    for _, smoothing in ipairs({ 0, 0.1 }) do
      local cg = x:clone()
      local cv = loss.cross_entropy(x, labels, { grad = cg, label_smoothing = smoothing, weight = 1.5 })
      local gv = loss.cross_entropy(xg, lg, { grad = true, label_smoothing = smoothing, weight = 1.5 })
      assert.near(cv:item(), gv:item(), 2e-5 * math.abs(cv:item()), "value")
      -- the gradient written over the logits themselves
      local xi = xg:clone()
      loss.cross_entropy(xi, lg, { grad = xi, label_smoothing = smoothing, weight = 1.5 })
      assert_close(cg:tolist(), xi:float():cpu():tolist(), 8e-3, 1e-9, "in place, smoothing " .. smoothing)
    end
    local cg, gg = dq.zeros(rows, V), dq.zeros(rows, V, { device = DEVICE })
    local cv = loss.kl(x, y, { grad = cg, temperature = 2, labels = labels })
    local gv = loss.kl(xg, yg, { grad = gg, temperature = 2, labels = lg })
    assert.near(cv:item(), gv:item(), 2e-5 * math.abs(cv:item()), "kl value")
    assert_close(cg:tolist(), gg:cpu():tolist(), 1e-4, 2e-6, "kl gradient")
  end)

  it("an out-of-range label makes the value NaN on the GPU", function()
    if not ON_GPU then return pending("the CPU reports it as an error instead") end
    local x = randn({ 3, 10 }):to(DEVICE)
    local v = loss.cross_entropy(x, dq.tensor({ 1, 12, 3 }, { dtype = "i64", device = DEVICE }))
    local value = v:item()
    assert.is_true(value ~= value)
  end)
end)
