-- dqbart.loss (dq.loss): the fused losses of engine/dqbart_loss.h. Each
-- returns value, grad: value a 0-d f32 tensor on the inputs' device (the
-- loss itself, unweighted; reading it with :item() synchronizes), grad the
-- gradient tensor or nil.
--
-- Common opts:
--   weight      the gradient is weight * dLoss/dStudent (1)
--   grad        a tensor to write the gradient into, true for a new one,
--               nil/false for none
--   accumulate  add the gradient into opts.grad instead of writing it
--   value       a 0-d f32 tensor to receive the value (else a new one)
--   add_value   add the loss to opts.value instead of writing it
local core = require("dqbart.ffi")
local tensor = require("dqbart.tensor")
local C, check = core.C, core.check
local new = tensor.undefined

local M = {}

M.IGNORE_INDEX = -100

local function outputs(opts)
  local value = opts.value or new()
  local grad = opts.grad
  if grad == true then grad = new() elseif not grad then grad = nil end
  local flags = (opts.accumulate and C.DQ_LOSS_ADD_GRAD or 0) + (opts.add_value and C.DQ_LOSS_ADD_VALUE or 0)
  return value, grad, opts.weight or 1, flags
end

-- Token cross-entropy, mean over labels ~= ignore_index (-100).
-- opts.ignore_index, opts.label_smoothing (0).
function M.cross_entropy(logits, labels, opts)
  opts = opts or {}
  local value, grad, weight, flags = outputs(opts)
  check(C.dq_loss_cross_entropy(value, grad, weight, flags, logits, labels, opts.ignore_index or M.IGNORE_INDEX,
    opts.label_smoothing or 0), 2)
  return value, grad
end

-- mean((student - teacher)^2) over all elements.
function M.mse(student, teacher, opts)
  opts = opts or {}
  local value, grad, weight, flags = outputs(opts)
  check(C.dq_loss_mse(value, grad, weight, flags, student, teacher), 2)
  return value, grad
end

-- The reference's enc_hid_last: per-sample MSE (over all but the first
-- dim) summed over the samples.
function M.mse_per_sample(student, teacher, opts)
  opts = opts or {}
  local value, grad, weight, flags = outputs(opts)
  check(C.dq_loss_mse_per_sample(value, grad, weight, flags, student, teacher), 2)
  return value, grad
end

-- T^2 * KL(softmax(teacher / T) || softmax(student / T)), mean over rows.
-- opts.temperature (1), opts.labels + opts.ignore_index (-100) to skip rows.
function M.kl(student, teacher, opts)
  opts = opts or {}
  local value, grad, weight, flags = outputs(opts)
  check(C.dq_loss_kl(value, grad, weight, flags, student, teacher, opts.labels, opts.ignore_index or M.IGNORE_INDEX,
    opts.temperature or 1), 2)
  return value, grad
end

return M
