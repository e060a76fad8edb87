-- dqbart.ops: the engine's core ops, each a thin call into the C API.
--
-- Every op takes an optional `out` last: when given (allocated, e.g. from
-- an arena) the result is written there after a shape check; when nil a new
-- tensor is allocated. Ops return their output(s). The same functions are
-- methods of tensors: x:gelu() == dq.gelu(x).
local core = require("dqbart.ffi")
local tensor = require("dqbart.tensor")
local ffi, C, check = core.ffi, core.C, core.check
local new = tensor.undefined
local methods, mt = tensor.methods, tensor.metatable

local M = {}

-- out = alpha * op(a) @ op(b) + beta * out
-- opts: trans_a, trans_b (booleans), alpha (1), beta (0), out
function M.matmul(a, b, opts)
  opts = opts or {}
  local out = opts.out or new()
  check(C.dq_matmul(out, a, b, opts.trans_a and 1 or 0, opts.trans_b and 1 or 0,
    opts.alpha or 1, opts.beta or 0), 2)
  return out
end

local function binary(fn)
  return function(a, b, out)
    out = out or new()
    check(fn(out, a, b), 2)
    return out
  end
end
M.add = binary(C.dq_add)
M.sub = binary(C.dq_sub)
M.mul = binary(C.dq_mul)

function M.scale(x, alpha, out)
  out = out or new()
  check(C.dq_scale(out, x, alpha), 2)
  return out
end

-- y = alpha * x + beta * y, in place on y.
function M.axpby(y, x, alpha, beta)
  check(C.dq_axpby(y, x, alpha, beta), 2)
  return y
end

-- x summed over its leading dims into out (which fixes the trailing shape).
function M.sum_leading(x, out, accumulate)
  check(C.dq_sum_leading(out, x, accumulate and 1 or 0), 2)
  return out
end

local function unary(fn)
  return function(x, out)
    out = out or new()
    check(fn(out, x), 2)
    return out
  end
end
M.gelu = unary(C.dq_gelu)
M.relu = unary(C.dq_relu)

local function unary_backward(fn)
  return function(dy, x, dx)
    dx = dx or new()
    check(fn(dx, dy, x), 2)
    return dx
  end
end
M.gelu_backward = unary_backward(C.dq_gelu_backward)
M.relu_backward = unary_backward(C.dq_relu_backward)

-- LayerNorm over the last dim. opts: eps (1e-5), out, and save = true to
-- also return mean and rstd for the backward (or opts.mean/opts.rstd).
function M.layernorm(x, weight, bias, opts)
  opts = opts or {}
  local out = opts.out or new()
  local mean, rstd
  if opts.save or opts.mean then
    mean, rstd = opts.mean or new(), opts.rstd or new()
  end
  check(C.dq_layernorm(out, mean, rstd, x, weight, bias, opts.eps or 1e-5), 2)
  return out, mean, rstd
end

-- Returns dx, dweight, dbias. opts: accumulate, dx, dweight, dbias (outs).
function M.layernorm_backward(dy, x, weight, mean, rstd, opts)
  opts = opts or {}
  local dx, dw, db = opts.dx or new(), opts.dweight or new(), opts.dbias or new()
  check(C.dq_layernorm_backward(dx, dw, db, dy, x, weight, mean, rstd, opts.accumulate and 1 or 0), 2)
  return dx, dw, db
end

-- softmax(scale * x + mask) over the last dim. opts: mask, scale (1), out.
function M.softmax(x, opts)
  opts = opts or {}
  local out = opts.out or new()
  check(C.dq_softmax(out, x, opts.mask, opts.scale or 1), 2)
  return out
end

function M.softmax_backward(dy, y, opts)
  opts = opts or {}
  local dx = opts.out or new()
  check(C.dq_softmax_backward(dx, dy, y, opts.scale or 1), 2)
  return dx
end

-- opts: seed (required), offset (0), out
function M.dropout(x, p, opts)
  local out = opts.out or new()
  check(C.dq_dropout(out, x, p, opts.seed, opts.offset or 0), 2)
  return out
end

function M.dropout_backward(dy, p, opts)
  local dx = opts.out or new()
  check(C.dq_dropout_backward(dx, dy, p, opts.seed, opts.offset or 0), 2)
  return dx
end

function M.embedding(weight, ids, out)
  out = out or new()
  check(C.dq_embedding(out, weight, ids), 2)
  return out
end

-- dweight[ids] += dout (dweight is accumulated into, never cleared).
function M.embedding_backward(dweight, dout, ids)
  check(C.dq_embedding_backward(dweight, dout, ids), 2)
  return dweight
end

local reductions = { sum = C.DQ_REDUCE_SUM, mean = C.DQ_REDUCE_MEAN, max = C.DQ_REDUCE_MAX,
                     absmax = C.DQ_REDUCE_ABSMAX }

local function reduction_id(name)
  local id = reductions[name]
  if not id then error(("unknown reduction '%s' (sum, mean, max, absmax)"):format(tostring(name)), 3) end
  return id
end

-- Reduce everything to a 0-d f32 tensor, or with rows = true the last dim.
function M.reduce(x, name, rows, out)
  out = out or new()
  local fn = rows and C.dq_reduce_rows or C.dq_reduce_all
  check(fn(out, x, reduction_id(name)), 2)
  return out
end

function M.reduce_backward(dout, x, out, name, rows, dx)
  dx = dx or new()
  check(C.dq_reduce_backward(dx, dout, x, out, reduction_id(name), rows and 1 or 0), 2)
  return dx
end

function M.sum(x, out) return M.reduce(x, "sum", false, out) end
function M.mean(x, out) return M.reduce(x, "mean", false, out) end
function M.max(x, out) return M.reduce(x, "max", false, out) end
function M.absmax(x, out) return M.reduce(x, "absmax", false, out) end

-- ---- methods and operators ---------------------------------------------------------

for _, name in ipairs({ "add", "sub", "mul", "scale", "gelu", "relu", "sum", "mean", "max", "absmax",
                        "softmax", "reduce" }) do
  methods[name] = M[name]
end
function methods:matmul(b, opts) return M.matmul(self, b, opts) end

-- A 0-d tensor holding v, matching t's dtype and device, for `t + 1`.
local function scalar_like(t, v)
  return tensor.full({}, v, { dtype = t.dtype, device = t.device })
end

local function arith(op, scalar_op)
  return function(a, b)
    local ta, tb = tensor.is_tensor(a), tensor.is_tensor(b)
    if ta and tb then return op(a, b) end
    if ta then return scalar_op(a, b, false) end
    return scalar_op(b, a, true)
  end
end

mt.__add = arith(M.add, function(t, v) return M.add(t, scalar_like(t, v)) end)
mt.__sub = arith(M.sub, function(t, v, swapped)
  if swapped then return M.sub(scalar_like(t, v), t) end
  return M.sub(t, scalar_like(t, v))
end)
mt.__mul = arith(M.mul, function(t, v) return M.scale(t, v) end)
mt.__div = function(a, b)
  if tensor.is_tensor(a) and type(b) == "number" then return M.scale(a, 1 / b) end
  error("division is defined for tensor / number only", 2)
end
mt.__unm = function(a) return M.scale(a, -1) end

return M
