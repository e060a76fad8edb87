-- dq.optim: AdamW over one flat buffer against torch.optim.AdamW +
-- clip_grad_norm_ and transformers 4.x's AdamW (fixtures recorded by
-- spec/fixtures/make_optim_fixtures.py) and against a plain Lua reference in
-- double precision; the gradient norm, the non-finite flag, skipped steps,
-- the working copy, checkpoints of the state, argument errors; CUDA against
-- the CPU when a GPU is present.
local dq = require("dqbart")
local cuda_skip = require("cuda_skip")

local HERE = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "spec"
local FIXTURE = dofile(HERE .. "/fixtures/optim/adamw_expected.lua")

local function case(name)
  for _, c in ipairs(FIXTURE.cases) do if c.name == name then return c end end
  error("no fixture case " .. name)
end

-- Largest |a - b| / max(1, |b|).
local function max_rel(a, b)
  assert.are.equal(#b, #a)
  local worst = 0
  for i = 1, #a do
    local d = math.abs(a[i] - b[i]) / math.max(1, math.abs(b[i]))
    if d ~= d then return math.huge end
    if d > worst then worst = d end
  end
  return worst
end

local function same_bits(a, b)
  assert.are.equal(#b, #a)
  for i = 1, #a do
    if a[i] ~= b[i] and not (a[i] ~= a[i] and b[i] ~= b[i]) then
      return false, ("element %d: %.9g vs %.9g"):format(i, a[i], b[i])
    end
  end
  return true
end

-- ---- a plain reference in double ------------------------------------------------------

local function reference_adamw(opts)
  local p, m, v = {}, {}, {}
  for i, x in ipairs(opts.init) do p[i], m[i], v[i] = x, 0, 0 end
  local b1, b2 = opts.betas[1], opts.betas[2]
  local out = {}
  for step, grads in ipairs(opts.grads) do
    local lr = opts.lrs and opts.lrs[step] or opts.lr
    local scale = 1
    if opts.max_grad_norm then
      local s = 0
      for _, g in ipairs(grads) do s = s + g * g end
      local norm = math.sqrt(s)
      scale = math.min(1, opts.max_grad_norm / (norm + 1e-6))
    end
    local bc1, bc2 = 1 - b1 ^ step, 1 - b2 ^ step
    for i = 1, #p do
      local g = grads[i] * scale
      local wd = (opts.mask == nil or opts.mask[i] ~= 0) and opts.weight_decay or 0
      if opts.variant == "transformers" then
        m[i] = b1 * m[i] + (1 - b1) * g
        v[i] = b2 * v[i] + (1 - b2) * g * g
        p[i] = p[i] - lr * math.sqrt(bc2) / bc1 * m[i] / (math.sqrt(v[i]) + opts.eps)
        p[i] = p[i] - lr * wd * p[i]
      else
        p[i] = p[i] * (1 - lr * wd)
        m[i] = b1 * m[i] + (1 - b1) * g
        v[i] = b2 * v[i] + (1 - b2) * g * g
        p[i] = p[i] - lr / bc1 * m[i] / (math.sqrt(v[i]) / math.sqrt(bc2) + opts.eps)
      end
    end
    local snapshot = {}
    for i = 1, #p do snapshot[i] = p[i] end
    out[step] = snapshot
  end
  return out
end

local function random_list(n, seed, scale)
  return dq.scale(dq.randn({ n }, { seed = seed }), scale or 1):tolist()
end

-- Run our optimizer over a list of gradient lists; returns the parameter
-- lists after each step and the norms.
local function run_ours(opts)
  local device = opts.device or "cpu"
  local params = dq.tensor(opts.init, { device = device })
  local grads = dq.zeros({ #opts.init }, { device = device })
  local opt = dq.optim.adamw({
    params = params, grads = grads, lr = opts.lr, betas = opts.betas, eps = opts.eps,
    weight_decay = opts.weight_decay, variant = opts.variant, decay_mask = opts.decay_mask,
    working = opts.working, skip_nonfinite = opts.skip_nonfinite,
  })
  local history, norms = {}, {}
  for step, g in ipairs(opts.grads) do
    grads:copy_(dq.tensor(g))
    local norm = opt:step({ lr = opts.lrs and opts.lrs[step] or nil, max_grad_norm = opts.max_grad_norm })
    norms[step] = norm and norm:item() or nil
    history[step] = params:tolist()
  end
  return history, norms, opt, params
end

local function fixture_grads(c)
  local gs = {}
  for k, s in ipairs(c.steps) do gs[k] = s.grads end
  return gs
end

-- The parameters after every step within 1e-6 (largest relative error) of
-- the fixture case's.
local function assert_follows(c, history)
  for k, s in ipairs(c.steps) do
    local err = max_rel(history[k], s.params)
    assert.is_true(err <= 1e-6, ("step %d: max error %.3g"):format(k, err))
  end
end

-- ---- torch / transformers fixtures ------------------------------------------------------

describe("dq.optim.adamw against torch", function()
  it("matches torch.optim.AdamW with clip_grad_norm_ and a changing lr", function()
    local c = case("torch_clip")
    local lrs = {}
    for k, s in ipairs(c.steps) do lrs[k] = s.lr end
    local history, norms = run_ours({ init = c.init, grads = fixture_grads(c), lrs = lrs, betas = { 0.9, 0.999 },
      eps = 1e-8, weight_decay = 0.01, max_grad_norm = 1.0 })
    for k, s in ipairs(c.steps) do
      assert.is_true(math.abs(norms[k] - s.norm) <= 1e-6 * s.norm, ("step %d norm %.9g vs torch %.9g"):format(k,
        norms[k], s.norm))
    end
    assert_follows(c, history)
  end)

  it("clipping bites in the fixture where the norm exceeds 1 and not elsewhere", function()
    -- The fixture must exercise both branches or the test above proves less.
    local c, above, below = case("torch_clip"), 0, 0
    for _, s in ipairs(c.steps) do if s.norm > 1 then above = above + 1 else below = below + 1 end end
    assert.is_true(above >= 2 and below >= 2)
  end)

  it("matches per-group weight decay through a decay mask", function()
    local c = case("torch_groups")
    local buf = dq.tensor(c.init)
    local mask = dq.optim.decay_mask({
      params = buf, no_decay = { "bias" },
      tensors = { { name = "w1.weight", tensor = buf:view(0, 35) }, { name = "w1.bias", tensor = buf:view(35, 5) },
        { name = "w2.weight", tensor = buf:view(40, 12) } },
    })
    local m = mask:tolist()
    assert.are.equal(1, m[35]); assert.are.equal(0, m[36]); assert.are.equal(0, m[40]); assert.are.equal(1, m[41])
    local history = run_ours({ init = c.init, grads = fixture_grads(c), lr = 2e-2, betas = { 0.8, 0.99 }, eps = 1e-8,
      weight_decay = 0.1, decay_mask = mask })
    assert_follows(c, history)
  end)

  it("matches transformers.AdamW (4.x, the reference's optimizer)", function()
    local c = case("transformers")
    local history = run_ours({ init = c.init, grads = fixture_grads(c), lr = 3e-2, betas = { 0.9, 0.999 }, eps = 1e-6,
      weight_decay = 0.05, variant = "transformers" })
    assert_follows(c, history)
  end)

  it("the two variants differ (the fixture tells them apart)", function()
    local c = case("transformers")
    local history = run_ours({ init = c.init, grads = fixture_grads(c), lr = 3e-2, betas = { 0.9, 0.999 }, eps = 1e-6,
      weight_decay = 0.05, variant = "torch" })
    assert.is_true(max_rel(history[5], c.steps[5].params) > 1e-4)
  end)
end)

-- ---- the double reference ----------------------------------------------------------------

describe("dq.optim.adamw against a double-precision reference", function()
  local n = 300
  local init = random_list(n, 11)
  local grads = {}
  for k = 1, 8 do grads[k] = random_list(n, 100 + k, k % 3 == 0 and 0.01 or 0.5) end
  local mask = {}
  for i = 1, n do mask[i] = (i % 7 == 0) and 0 or 1 end

  for _, variant in ipairs({ "torch", "transformers" }) do
    it(("%s variant with weight decay, a mask and clipping over 8 steps"):format(variant), function()
      local opts = { init = init, grads = grads, lr = 1e-2, betas = { 0.9, 0.98 }, eps = 1e-6, weight_decay = 0.1,
        max_grad_norm = 2.0, variant = variant, mask = mask }
      local expected = reference_adamw(opts)
      opts.decay_mask = dq.tensor(mask, { dtype = "i8" })
      local history = run_ours(opts)
      for k = 1, #grads do
        local err = max_rel(history[k], expected[k])
        assert.is_true(err <= 2e-6, ("%s step %d: max error %.3g"):format(variant, k, err))
      end
    end)
  end

  it("leaves the gradient buffer untouched when clipping", function()
    local params, g = dq.tensor(init), dq.tensor(grads[1])
    local before = g:tolist()
    dq.optim.adamw({ params = params, grads = g, lr = 1e-3 }):step({ max_grad_norm = 0.1 })
    assert.is_true(same_bits(g:tolist(), before))
  end)

  it("takes multi-dim buffers through a flat view", function()
    local p2 = dq.tensor(init):reshape(30, 10)
    local g2 = dq.tensor(grads[1]):reshape(30, 10)
    dq.optim.adamw({ params = p2, grads = g2, lr = 1e-2, weight_decay = 0 }):step()
    local expected = reference_adamw({ init = init, grads = { grads[1] }, lr = 1e-2, betas = { 0.9, 0.999 },
      eps = 1e-8, weight_decay = 0 })
    assert.is_true(max_rel(p2:tolist(), expected[1]) <= 1e-6)
  end)
end)

-- ---- norm, flags, skipping -------------------------------------------------------------------

describe("dq.optim.grad_norm", function()
  it("is the L2 norm of every element, as a 0-d f32 tensor", function()
    local g = dq.tensor({ 3, 4, 0, 0, 12 })
    local norm = dq.optim.grad_norm(g)
    assert.are.equal(0, norm:dim())
    assert.are.equal("f32", norm:type())
    assert.are.equal(13, norm:item())
  end)

  it("does not depend on the thread count (fixed block order)", function()
    local g = dq.randn({ 300001 }, { seed = 5 })
    local threads = dq.get_num_threads()
    dq.set_num_threads(1)
    local one = dq.optim.grad_norm(g):item()
    dq.set_num_threads(math.max(2, threads))
    local many = dq.optim.grad_norm(g):item()
    dq.set_num_threads(threads)
    assert.are.equal(one, many)
    local s = 0
    for _, x in ipairs(g:tolist()) do s = s + x * x end
    assert.is_true(math.abs(one - math.sqrt(s)) <= 1e-6 * math.sqrt(s))
  end)

  it("is 0 for an empty buffer", function()
    assert.are.equal(0, dq.optim.grad_norm(dq.zeros({ 0 })):item())
  end)
end)

describe("non-finite values", function()
  it("flag_nonfinite sets the flag for NaN and inf only, and never clears it", function()
    local flag = dq.optim.flag_nonfinite(nil, dq.tensor({ 1, 2, 3 }))
    assert.are.equal("i32", flag:type())
    assert.are.equal(0, flag:item())
    dq.optim.flag_nonfinite(flag, dq.tensor({ 1, math.huge }))
    assert.are.equal(1, flag:item())
    dq.optim.flag_nonfinite(flag, dq.tensor({ 1 }))
    assert.are.equal(1, flag:item())
    assert.are.equal(1, dq.optim.flag_nonfinite(nil, dq.tensor({ 0 / 0 })):item())
  end)

  it("skip_nonfinite leaves parameters and moments alone when the norm is NaN", function()
    local params, g = dq.tensor({ 1, 2, 3 }), dq.tensor({ 0.1, 0.2, 0.3 })
    local opt = dq.optim.adamw({ params = params, grads = g, lr = 0.1, skip_nonfinite = true })
    opt:step()
    local after_one = params:tolist()
    local m_one = opt:state().exp_avg:tolist()
    g:copy_(dq.tensor({ 0.1, 0 / 0, 0.3 }))
    opt:step({ max_grad_norm = 1 })
    assert.is_true(same_bits(params:tolist(), after_one))
    assert.is_true(same_bits(opt:state().exp_avg:tolist(), m_one))
    assert.is_true(opt:nonfinite())
    opt:reset_nonfinite()
    assert.is_false(opt:nonfinite())
  end)

  it("without skip_nonfinite a NaN gradient spreads (torch's behaviour) and is flagged", function()
    local params, g = dq.tensor({ 1, 2, 3 }), dq.tensor({ 0.1, 0 / 0, 0.3 })
    local opt = dq.optim.adamw({ params = params, grads = g, lr = 0.1 })
    opt:step({ max_grad_norm = 1 })
    local p = params:tolist()
    assert.is_true(p[1] ~= p[1] and p[2] ~= p[2])
    assert.is_true(opt:nonfinite())
  end)

  it("check_finite flags a loss", function()
    local opt = dq.optim.adamw({ params = dq.tensor({ 1 }), grads = dq.tensor({ 1 }) })
    opt:check_finite(dq.tensor({ 2.5 }))
    assert.is_false(opt:nonfinite())
    opt:check_finite(dq.tensor({ -math.huge }))
    assert.is_true(opt:nonfinite())
  end)
end)

-- ---- working copy, state, errors ------------------------------------------------------------

describe("dq.optim.adamw extras", function()
  local init = random_list(64, 21)
  local grads = {}
  for k = 1, 5 do grads[k] = random_list(64, 200 + k, 0.3) end

  it("writes the working copy in the same pass, rounded to its dtype", function()
    for _, dtype in ipairs({ "bf16", "f16", "f32" }) do
      local working = dq.zeros({ 64 }, { dtype = dtype })
      local _, _, _, params = run_ours({ init = init, grads = grads, lr = 1e-2, working = working })
      assert.is_true(same_bits(working:tolist(), params:to(dtype):tolist()), dtype)
    end
  end)

  it("resumes from a saved state bit for bit", function()
    local full = run_ours({ init = init, grads = grads, lr = 1e-2, weight_decay = 0.01 })
    local first = { grads[1], grads[2], grads[3] }
    local _, _, opt, params = run_ours({ init = init, grads = first, lr = 1e-2, weight_decay = 0.01 })
    local state = opt:state()
    assert.are.equal(3, state.step)
    local saved = { step = state.step, exp_avg = state.exp_avg:clone(), exp_avg_sq = state.exp_avg_sq:clone() }
    local p2, g2 = params:clone(), dq.zeros({ 64 })
    local resumed = dq.optim.adamw({ params = p2, grads = g2, lr = 1e-2, weight_decay = 0.01 })
    resumed:load_state(saved)
    for k = 4, 5 do
      g2:copy_(dq.tensor(grads[k]))
      resumed:step()
    end
    assert.is_true(same_bits(p2:tolist(), full[5]))
  end)

  it("rejects mismatched buffers, bad options and unknown keys with clear messages", function()
    local p = dq.zeros({ 4 })
    assert.has_error(function() dq.optim.adamw({ params = p, grads = dq.zeros({ 5 }) }):step() end,
      "dq_adamw_step: grads [5] f32 cpu must have the 4 elements of params [4] f32 cpu")
    local ok, err = pcall(dq.optim.adamw, { params = p, grads = p, learning_rate = 1 })
    assert.is_false(ok)
    assert.matches("unknown option 'learning_rate'", err)
    ok, err = pcall(function() dq.optim.adamw({ params = p, grads = p }):step() end)
    assert.is_false(ok)
    assert.matches("overlap in memory", err)
    ok, err = pcall(function() dq.optim.adamw({ params = p, grads = dq.zeros({ 4 }), betas = { 1, 0.9 } }):step() end)
    assert.is_false(ok)
    assert.matches("beta1 = 1; expected 0 <= beta1 < 1", err)
    ok, err = pcall(function()
      dq.optim.adamw({ params = p, grads = dq.zeros({ 4 }), decay_mask = dq.zeros({ 4 }) }):step()
    end)
    assert.is_false(ok)
    assert.matches("decay_mask is %[4%] f32 cpu; expected i8", err)
  end)
end)

-- ---- CUDA ------------------------------------------------------------------------------------

describe("dq.optim on CUDA", function()
  if cuda_skip.skipped() then return end

  local n = 100003
  local init = random_list(n, 31)
  local grads = {}
  for k = 1, 4 do grads[k] = random_list(n, 300 + k, k == 2 and 0.001 or 0.05) end
  local mask = {}
  for i = 1, n do mask[i] = (i % 5 == 0) and 0 or 1 end

  for _, variant in ipairs({ "torch", "transformers" }) do
    it(("matches the CPU (%s variant, clipping, mask, bf16 working copy)"):format(variant), function()
      local results = {}
      for _, device in ipairs({ "cpu", "cuda" }) do
        local working = dq.zeros({ n }, { dtype = "bf16", device = device })
        local history, norms = run_ours({ init = init, grads = grads, lr = 3e-3, weight_decay = 0.05,
          max_grad_norm = 1.0, variant = variant, device = device, working = working,
          decay_mask = dq.tensor(mask, { dtype = "i8", device = device }) })
        results[device] = { params = history[#history], norms = norms, working = working:tolist() }
      end
      for k = 1, #grads do
        local a, b = results.cpu.norms[k], results.cuda.norms[k]
        assert.is_true(math.abs(a - b) <= 1e-6 * a, ("norm %d: cpu %.9g cuda %.9g"):format(k, a, b))
      end
      -- The norms may differ in the last bit (different summation trees),
      -- which moves the clip factor by an ulp: hold the parameters to 1e-6.
      assert.is_true(max_rel(results.cuda.params, results.cpu.params) <= 1e-6)
      assert.is_true(max_rel(results.cuda.working, results.cpu.working) <= 1e-2)
    end)
  end

  it("gives the CPU's bits without clipping", function()
    local results = {}
    for _, device in ipairs({ "cpu", "cuda" }) do
      results[device] = run_ours({ init = init, grads = grads, lr = 3e-3, weight_decay = 0.05, device = device })
    end
    assert.is_true(same_bits(results.cuda[4], results.cpu[4]))
  end)

  it("computes the norm deterministically and flags non-finite values on the device", function()
    local g = dq.randn({ 5000000 }, { seed = 9 }):to("cuda")
    local a = dq.optim.grad_norm(g):item()
    local b = dq.optim.grad_norm(g):item()
    assert.are.equal(a, b)
    local cpu = dq.optim.grad_norm(g:cpu()):item()
    assert.is_true(math.abs(a - cpu) <= 1e-6 * cpu)
    local flag = dq.optim.flag_nonfinite(nil, g)
    assert.are.equal(0, flag:item())
    local bad = dq.tensor({ 1, 2, 0 / 0 }, { device = "cuda" })
    dq.optim.flag_nonfinite(flag, bad)
    assert.are.equal(1, flag:item())
  end)
end)
