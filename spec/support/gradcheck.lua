-- gradcheck: finite-difference checks of hand-written backward functions.
--
--   gradcheck.check{
--     inputs = { x = dq.randn(...), w = ... },      -- CPU f32 tensors
--     wrt = { "x", "w" },                            -- inputs to perturb
--     forward = function(inp) return out end,        -- a tensor
--     backward = function(inp, dout) return { x = dx, w = dw } end,
--   }
--
-- The scalar probed is L = sum(forward(inputs) * R) with a fixed random R,
-- so dout = R. Each perturbed element's central difference (in double,
-- from f32 forwards) must match the analytic gradient within
-- atol + rtol * |analytic|. Large inputs are sampled (max_checks entries).
local ffi = require("ffi")
local dq = require("dqbart")

local M = {}

local function weighted_sum(out, weights)
  local o, w = ffi.cast("float*", out.data), ffi.cast("float*", weights.data)
  local s = 0
  for i = 0, tonumber(out.numel) - 1 do s = s + o[i] * w[i] end
  return s
end

function M.check(case)
  local h, atol, rtol = case.eps or 1e-3, case.atol or 3e-3, case.rtol or 1e-2
  local inputs = case.inputs
  local out = case.forward(inputs)
  local weights = dq.randn(out:size(), { seed = case.seed or 1234, offset = 77 })
  local grads = case.backward(inputs, weights)
  local failures = {}
  for _, name in ipairs(case.wrt) do
    local x, g = inputs[name], grads[name]
    assert(g, "backward returned no gradient for " .. name)
    assert(g.numel == x.numel, ("gradient of %s has %d elements, input has %d"):format(
      name, tonumber(g.numel), tonumber(x.numel)))
    local xp, gp = ffi.cast("float*", x.data), ffi.cast("float*", g.data)
    local n = tonumber(x.numel)
    local stride = math.max(1, math.floor(n / (case.max_checks or 60)))
    for i = 0, n - 1, stride do
      local saved = xp[i]
      xp[i] = saved + h
      local lp = weighted_sum(case.forward(inputs), weights)
      xp[i] = saved - h
      local lm = weighted_sum(case.forward(inputs), weights)
      xp[i] = saved
      local numeric = (lp - lm) / (2 * h)
      local analytic = gp[i]
      if math.abs(numeric - analytic) > atol + rtol * math.abs(analytic) then
        failures[#failures + 1] = ("d/d%s[%d]: analytic %.6g, numeric %.6g"):format(name, i, analytic, numeric)
      end
    end
  end
  if #failures > 0 then
    error(("%d gradient mismatches:\n  %s"):format(#failures, table.concat(failures, "\n  ", 1,
      math.min(#failures, 10))), 2)
  end
  return true
end

-- The model parameters `names` of m against a scalar loss() (a Lua
-- number; m's gradients must already hold d loss / d parameter): the
-- central difference at the first, a middle and the last element of each,
-- step h (1e-2), within atol (2e-3) + rtol (2e-2) * |analytic|. Returns the
-- mismatches as lines of text (empty when none).
function M.model_params(m, names, loss, opts)
  opts = opts or {}
  local h, atol, rtol = opts.h or 1e-2, opts.atol or 2e-3, opts.rtol or 2e-2
  local failures = {}
  for _, pname in ipairs(names) do
    local g = m:grad(pname):clone()
    local w = m:param(pname)
    local pw, pg = ffi.cast("float*", w.data), ffi.cast("float*", g.data)
    local n = tonumber(w.numel)
    local function at(i, value)
      pw[i] = value
      m:params_changed()
    end
    for _, i in ipairs({ 0, math.floor(n / 3), n - 1 }) do
      local saved = pw[i]
      at(i, saved + h)
      local lp = loss()
      at(i, saved - h)
      local lm = loss()
      at(i, saved)
      local numeric, analytic = (lp - lm) / (2 * h), pg[i]
      if math.abs(numeric - analytic) > atol + rtol * math.abs(analytic) then
        failures[#failures + 1] = ("%s[%d]: analytic %.6g, numeric %.6g"):format(pname, i, analytic, numeric)
      end
    end
    g:free()
  end
  return failures
end

return M
