-- dqbart.quant (bindings): the quantizer ops of engine/dqbart_quant.h.
--
--   q = quant.quantize(x, { method = "auto", bits = 8, granularity = "tensor", clip = 2.5, out = t })
--   outs = quant.quantize_many({ w1, w2, ... }, { bits = 2, outs = { q1, q2, ... } })
--   dx = quant.backward(dy, x, { clip = 2.5, out = dx, accumulate = false })
--
-- method: "auto" (the reference: 1 bit bwn, 2 twn, else sym), "sym", "twn",
-- "bwn", "asym"; granularity: "tensor", "row" (last dim), "head" (each
-- slice of the two leading dims: per (batch, head) of [B, H, T, S]).
-- The user-facing namespace is dq.quant (lib/dqbart/quant_plan.lua adds
-- the W-E-A parser).
local core = require("dqbart.ffi")
local tensor = require("dqbart.tensor")
local ffi, C, check = core.ffi, core.C, core.check
local new = tensor.undefined

local M = {}

M.DEFAULT_CLIP = 2.5

local methods = { auto = C.DQ_QUANT_AUTO, sym = C.DQ_QUANT_SYM, twn = C.DQ_QUANT_TWN, bwn = C.DQ_QUANT_BWN,
                  asym = C.DQ_QUANT_ASYM }
local granularities = { tensor = C.DQ_QUANT_PER_TENSOR, row = C.DQ_QUANT_PER_ROW, head = C.DQ_QUANT_PER_HEAD }

local function lookup(map, kind, name, level)
  local id = map[name]
  if id == nil then
    local names = {}
    for k in pairs(map) do names[#names + 1] = k end
    table.sort(names)
    error(("unknown quantizer %s '%s' (one of: %s)"):format(kind, tostring(name), table.concat(names, ", ")), level + 1)
  end
  return id
end

-- The C spec for opts (see the header comment); bits defaults to 8.
function M.spec(opts, level)
  level = (level or 1) + 1
  opts = opts or {}
  local spec = ffi.new("dq_quant_spec")
  spec.method = lookup(methods, "method", opts.method or "auto", level)
  spec.bits = opts.bits or 8
  spec.granularity = lookup(granularities, "granularity", opts.granularity or "tensor", level)
  spec.clip = opts.clip or M.DEFAULT_CLIP
  return spec
end

function M.quantize(x, opts)
  local out = (opts and opts.out) or new()
  check(C.dq_quantize(out, x, M.spec(opts, 2)), 2)
  return out
end

-- Every tensor of the list with one spec; returns the list of outputs
-- (opts.outs, written in place, or new tensors).
function M.quantize_many(xs, opts)
  local n = #xs
  local outs = (opts and opts.outs) or {}
  if #outs ~= 0 and #outs ~= n then
    error(("quantize_many: %d outputs for %d inputs"):format(#outs, n), 2)
  end
  local xp, op = ffi.new("const dq_tensor *[?]", math.max(n, 1)), ffi.new("dq_tensor *[?]", math.max(n, 1))
  for i = 1, n do
    outs[i] = outs[i] or new()
    xp[i - 1] = xs[i]
    op[i - 1] = outs[i]
  end
  check(C.dq_quantize_many(n, op, xp, M.spec(opts, 2)), 2)
  return outs
end

-- Straight-through estimator: dy where -clip < x < clip, else 0.
function M.backward(dy, x, opts)
  opts = opts or {}
  local dx = opts.out or new()
  check(C.dq_quantize_backward(dx, dy, x, opts.clip or M.DEFAULT_CLIP, opts.accumulate and 1 or 0), 2)
  return dx
end

return M
