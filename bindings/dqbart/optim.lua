-- dqbart.optim (dq.optim): AdamW over a whole flat parameter buffer, with
-- gradient-norm clipping and a non-finite flag kept on the device
-- (engine/dqbart_optim.h).
--
--   local opt = dq.optim.adamw{
--     params = m:params(), grads = m:grads(),   -- f32 buffers (views), same numel
--     lr = 3e-5, betas = { 0.9, 0.999 }, eps = 1e-8, weight_decay = 0,
--     variant = "torch",        -- or "transformers": transformers.AdamW (4.x), the reference's
--     decay_mask = mask,        -- optional i8 tensor: decay where non-zero (dq.optim.decay_mask)
--     working = bf16_copy,      -- optional: also written with the new weights, same pass
--     skip_nonfinite = false,   -- true: a NaN/inf gradient norm skips the update on the device
--   }
--   local norm = opt:step{ lr = current_lr, max_grad_norm = 1.0 }
--     -- norm: 0-d f32 tensor on the device (computed when clipping, when
--     -- skip_nonfinite is on, or with track_norm = true), no host sync
--   opt:check_finite(loss)      -- flag a NaN/inf loss (device-side, no sync)
--   opt:nonfinite()             -- true when a checked value or a norm was NaN/inf since
--                               -- the last reset (reads the flag: synchronizes); opt:reset_nonfinite()
--   opt:state() -> { step = n, exp_avg = t, exp_avg_sq = t }     (the live moment tensors)
--   opt:load_state(state)       -- copies the moments in and sets the step count
--   dq.optim.grad_norm(grads[, out]) ; dq.optim.flag_nonfinite(flag, x)
--
-- Steps are counted by the optimizer: the n-th call of step() is update n
-- (bias corrections use it). lr given to step() wins over the constructor's.
local core = require("dqbart.ffi")
local tensor = require("dqbart.tensor")
local suggest = require("dqbart.suggest")
local ffi, C, check = core.ffi, core.C, core.check

local M = {}

local options_ct = ffi.typeof("dq_adamw_options")
local VARIANTS = { torch = C.DQ_ADAMW_TORCH, transformers = C.DQ_ADAMW_TRANSFORMERS }
M.VARIANTS = { "torch", "transformers" }

local Optimizer = {}
Optimizer.__index = Optimizer

local KNOWN = {
  params = true, grads = true, lr = true, betas = true, eps = true, weight_decay = true, variant = true,
  decay_mask = true, working = true, skip_nonfinite = true, track_norm = true,
}

local function number_opt(opts, key, default, level)
  local v = opts[key]
  if v == nil then return default end
  if type(v) ~= "number" then
    error(("dq.optim.adamw: %s must be a number, got %s %s"):format(key, type(v), tostring(v)), level + 1)
  end
  return v
end

function M.adamw(opts)
  if type(opts) ~= "table" then error("dq.optim.adamw: expected a table of options", 2) end
  for k in pairs(opts) do
    if not KNOWN[k] then
      error(("dq.optim.adamw: unknown option '%s' (did you mean '%s'?)"):format(tostring(k),
        suggest.nearest(k, KNOWN)), 2)
    end
  end
  local params, grads = opts.params, opts.grads
  if not tensor.is_tensor(params) then error("dq.optim.adamw: params must be a tensor (the f32 parameter buffer)", 2) end
  if not tensor.is_tensor(grads) then error("dq.optim.adamw: grads must be a tensor (the f32 gradient buffer)", 2) end
  local betas = opts.betas or { 0.9, 0.999 }
  if type(betas) ~= "table" or type(betas[1]) ~= "number" or type(betas[2]) ~= "number" then
    error("dq.optim.adamw: betas must be a list of two numbers, e.g. { 0.9, 0.999 }", 2)
  end
  local variant = opts.variant or "torch"
  if not VARIANTS[variant] then
    error(("dq.optim.adamw: variant must be 'torch' or 'transformers', got %s"):format(tostring(variant)), 2)
  end
  local device = tensor.device_name(params.device)
  local self = setmetatable({
    params = params, grads = grads, working = opts.working, decay_mask = opts.decay_mask,
    lr = number_opt(opts, "lr", 1e-3, 2), beta1 = betas[1], beta2 = betas[2],
    eps = number_opt(opts, "eps", variant == "transformers" and 1e-6 or 1e-8, 2),
    weight_decay = number_opt(opts, "weight_decay", variant == "transformers" and 0 or 1e-2, 2),
    variant = variant, skip_nonfinite = opts.skip_nonfinite and true or false,
    track_norm = opts.track_norm and true or false,
    step_count = 0,
    exp_avg = tensor.zeros({ tonumber(params.numel) }, { device = device }),
    exp_avg_sq = tensor.zeros({ tonumber(params.numel) }, { device = device }),
    norm = tensor.undefined(), flag = tensor.zeros({}, { dtype = "i32", device = device }),
  }, Optimizer)
  -- Moments are 1-d; a multi-dim params buffer is updated through a 1-d view.
  self.params_flat = params.ndim == 1 and params or params:reshape(tonumber(params.numel))
  self.grads_flat = grads.ndim == 1 and grads or grads:reshape(tonumber(grads.numel))
  return self
end

-- One update. opts: lr (default: the constructor's), max_grad_norm (> 0:
-- clip the global norm to it; default none), track_norm. Returns the
-- gradient norm tensor when it was computed (before clipping, as torch's
-- clip_grad_norm_ returns it), else nil.
function Optimizer:step(opts)
  opts = opts or {}
  local lr = opts.lr or self.lr
  if type(lr) ~= "number" then error("optimizer:step: lr must be a number", 2) end
  local max_norm = opts.max_grad_norm or 0
  if type(max_norm) ~= "number" then error("optimizer:step: max_grad_norm must be a number", 2) end
  local want_norm = max_norm > 0 or self.skip_nonfinite or self.track_norm or opts.track_norm
  if want_norm then
    check(C.dq_grad_norm(self.norm, self.grads_flat), 2)
    check(C.dq_flag_nonfinite(self.flag, self.norm), 2)
  end
  local o = options_ct()
  o.lr, o.beta1, o.beta2, o.eps, o.weight_decay = lr, self.beta1, self.beta2, self.eps, self.weight_decay
  o.max_grad_norm = max_norm
  o.step = self.step_count + 1
  o.variant = VARIANTS[self.variant]
  o.skip_nonfinite = self.skip_nonfinite and 1 or 0
  check(C.dq_adamw_step(self.params_flat, self.exp_avg, self.exp_avg_sq, self.grads_flat,
    want_norm and self.norm or nil, self.decay_mask, self.working, o), 2)
  self.step_count = self.step_count + 1
  return want_norm and self.norm or nil
end

-- The last gradient norm (a device tensor; undefined before the first).
function Optimizer:grad_norm() return self.norm end

function Optimizer:check_finite(x)
  check(C.dq_flag_nonfinite(self.flag, x), 2)
end

function Optimizer:nonfinite() return self.flag:item() ~= 0 end
function Optimizer:reset_nonfinite() self.flag:fill_(0) end

function Optimizer:state()
  return { step = self.step_count, exp_avg = self.exp_avg, exp_avg_sq = self.exp_avg_sq }
end

function Optimizer:load_state(state)
  if type(state) ~= "table" or type(state.step) ~= "number" or state.step < 0 or state.step % 1 ~= 0 then
    error("optimizer:load_state: expected { step = n, exp_avg = tensor, exp_avg_sq = tensor }", 2)
  end
  for _, k in ipairs({ "exp_avg", "exp_avg_sq" }) do
    local t = state[k]
    if not tensor.is_tensor(t) or t.numel ~= self.exp_avg.numel then
      error(("optimizer:load_state: %s must be a tensor of %d elements, got %s"):format(k,
        tonumber(self.exp_avg.numel), tensor.is_tensor(t) and t:shape_string() or type(t)), 2)
    end
    check(C.dq_copy(self[k], t), 2)
  end
  self.step_count = state.step
end

function Optimizer:free()
  for _, k in ipairs({ "exp_avg", "exp_avg_sq", "norm", "flag" }) do self[k]:free() end
end

-- ---- free functions ---------------------------------------------------------------------

function M.grad_norm(grads, out)
  out = out or tensor.undefined()
  check(C.dq_grad_norm(out, grads), 2)
  return out
end

-- flag: a 0-d i32 tensor (or nil: a new one, 0 unless x is non-finite).
function M.flag_nonfinite(flag, x)
  flag = flag or tensor.undefined()
  check(C.dq_flag_nonfinite(flag, x), 2)
  return flag
end

-- An i8 decay mask for a flat buffer: 1 everywhere except the tensors whose
-- names contain one of the no_decay strings (plain substring match, as the
-- reference's `any(nd in n for nd in no_decay)`).
--   dq.optim.decay_mask{ params = buf, tensors = { { name = "...", tensor = view }, ... },
--                        no_decay = { "bias", "LayerNorm.weight" } }
-- Views are located by their address inside buf.
function M.decay_mask(opts)
  local buf = opts.params
  if not tensor.is_tensor(buf) then error("dq.optim.decay_mask: params must be the parameter buffer", 2) end
  local n = tonumber(buf.numel)
  local size = tonumber(C.dq_dtype_size(buf.dtype))
  local base = ffi.cast("char*", buf.data)
  local host = tensor.empty({ n }, { dtype = "i8" })
  local mask = ffi.cast("int8_t*", host.data)
  ffi.fill(mask, n, 1)
  for _, entry in ipairs(opts.tensors or {}) do
    local name, view = entry.name, entry.tensor
    local skip = false
    for _, pattern in ipairs(opts.no_decay or {}) do
      if name:find(pattern, 1, true) then skip = true; break end
    end
    if skip then
      local offset = tonumber(ffi.cast("char*", view.data) - base) / size
      local len = tonumber(view.numel)
      if offset < 0 or offset + len > n or offset % 1 ~= 0 then
        error(("dq.optim.decay_mask: %s is not a view inside the parameter buffer"):format(name), 2)
      end
      ffi.fill(mask + offset, len, 0)
    end
  end
  if buf.device == -1 then return host end
  local out = host:to(tensor.device_name(buf.device))
  host:free()
  return out
end

return M
