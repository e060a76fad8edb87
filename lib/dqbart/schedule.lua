-- dqbart.schedule (dq.schedule): learning-rate schedules and the step
-- arithmetic of a training run, as transformers and the DQ-BART reference
-- (run_summarization_no_trainer.py) compute them.
--
--   local per_epoch = dq.schedule.steps_per_epoch{ examples = 204045, batch_size = 8, accumulation = 2 }
--   local s = dq.schedule.new{ kind = "linear", lr = 3e-5, total_steps = 20 * per_epoch,
--                              warmup_ratio = 0.05 }          -- or warmup_steps = N
--   for update = 1, s.total_steps do
--     opt:step{ lr = s:lr(update - 1) }   -- the lr of an update: the count of updates before it
--   end
--
-- s:lr(k) = lr * s:factor(k), with k the number of updates already made
-- (0 for the first), which is how torch's LambdaLR runs when
-- lr_scheduler.step() follows optimizer.step(): with warmup the very first
-- update has lr 0. The factors are transformers' lr lambdas exactly:
--   linear    k < w: k / max(1, w); else max(0, (T - k) / max(1, T - w))
--             (get_linear_schedule_with_warmup)
--   cosine    k < w: k / max(1, w); else max(0, 0.5 (1 + cos(pi * 2 c p))),
--             p = (k - w) / max(1, T - w), c = num_cycles (0.5)
--             (get_cosine_schedule_with_warmup)
--   constant  k < w: k / max(1, w); else 1 (get_constant_schedule_with_warmup)
-- Warmup from a ratio: floor(ratio * T) as the reference computes it
-- (int(args.warmup_ratio * args.max_train_steps)), or with warmup_rounding
-- = "ceil" as transformers' Trainer does (TrainingArguments.get_warmup_steps).
local M = {}

M.KINDS = { "linear", "cosine", "constant" }
M.ROUNDINGS = { "floor", "ceil" }

local function is_count(v) return type(v) == "number" and v >= 0 and v % 1 == 0 end

local function need(cond, fmt, ...)
  if not cond then error(fmt:format(...), 3) end
end

-- Warmup updates from a ratio of the total: "floor" (the reference) or
-- "ceil" (transformers' Trainer).
function M.warmup_steps(total_steps, ratio, rounding)
  need(is_count(total_steps), "schedule.warmup_steps: total_steps must be a count, got %s", tostring(total_steps))
  need(type(ratio) == "number" and ratio >= 0 and ratio <= 1,
    "schedule.warmup_steps: the ratio must be a number in [0, 1], got %s", tostring(ratio))
  rounding = rounding or "floor"
  local x = ratio * total_steps
  if rounding == "floor" then return math.floor(x) end
  need(rounding == "ceil", "schedule.warmup_steps: rounding must be 'floor' or 'ceil', got %s", tostring(rounding))
  return math.ceil(x)
end

-- Optimizer updates per epoch: batches = ceil(examples / batch_size)
-- (the last batch may be short; with world_size > 1 each rank takes
-- floor(batches / world_size), as dq.data's loader does), then
-- ceil(batches / accumulation): the last, partial accumulation of an epoch
-- still makes an update, in the reference and in transformers' Trainer.
-- With a token budget the batch count depends on the lengths: pass
-- `batches` (e.g. from the loader's plan) instead of examples/batch_size.
function M.steps_per_epoch(opts)
  local accumulation = opts.accumulation or 1
  local world = opts.world_size or 1
  need(is_count(accumulation) and accumulation >= 1,
    "schedule.steps_per_epoch: accumulation must be a positive integer, got %s", tostring(accumulation))
  need(is_count(world) and world >= 1, "schedule.steps_per_epoch: world_size must be a positive integer, got %s",
    tostring(world))
  local batches = opts.batches
  if batches == nil then
    need(is_count(opts.examples), "schedule.steps_per_epoch: examples must be a count, got %s", tostring(opts.examples))
    need(is_count(opts.batch_size) and opts.batch_size >= 1,
      "schedule.steps_per_epoch: batch_size must be a positive integer, got %s", tostring(opts.batch_size))
    batches = math.ceil(opts.examples / opts.batch_size)
    batches = math.floor(batches / world)
  end
  need(is_count(batches), "schedule.steps_per_epoch: batches must be a count, got %s", tostring(batches))
  if batches == 0 then return 0 end
  return math.ceil(batches / accumulation)
end

-- Total updates: max_steps when given, else ceil(epochs * per_epoch).
function M.total_steps(opts)
  if opts.max_steps ~= nil then
    need(is_count(opts.max_steps) and opts.max_steps >= 1, "schedule.total_steps: max_steps must be a positive integer, got %s",
      tostring(opts.max_steps))
    return opts.max_steps
  end
  need(type(opts.epochs) == "number" and opts.epochs > 0, "schedule.total_steps: epochs must be a positive number, got %s",
    tostring(opts.epochs))
  need(is_count(opts.steps_per_epoch), "schedule.total_steps: steps_per_epoch must be a count, got %s",
    tostring(opts.steps_per_epoch))
  return math.ceil(opts.epochs * opts.steps_per_epoch)
end

local Schedule = {}
Schedule.__index = Schedule

local function warm(k, w)
  return k / math.max(1, w)
end

local factors = {
  linear = function(self, k)
    local w, T = self.warmup_steps, self.total_steps
    if k < w then return warm(k, w) end
    return math.max(0, (T - k) / math.max(1, T - w))
  end,
  cosine = function(self, k)
    local w, T = self.warmup_steps, self.total_steps
    if k < w then return warm(k, w) end
    local progress = (k - w) / math.max(1, T - w)
    return math.max(0, 0.5 * (1 + math.cos(math.pi * self.num_cycles * 2 * progress)))
  end,
  constant = function(self, k)
    if k < self.warmup_steps then return warm(k, self.warmup_steps) end
    return 1
  end,
}

-- opts: kind ("linear"), lr (peak), total_steps, and warmup_steps or
-- warmup_ratio (with warmup_rounding), num_cycles (cosine, 0.5).
function M.new(opts)
  need(type(opts) == "table", "schedule.new: expected a table of options")
  local kind = opts.kind or "linear"
  need(factors[kind] ~= nil, "schedule.new: kind must be one of %s, got %s", table.concat(M.KINDS, ", "), tostring(kind))
  need(type(opts.lr) == "number" and opts.lr >= 0, "schedule.new: lr must be a number >= 0, got %s", tostring(opts.lr))
  need(is_count(opts.total_steps), "schedule.new: total_steps must be a count, got %s", tostring(opts.total_steps))
  local warmup = opts.warmup_steps
  if warmup == nil then
    warmup = M.warmup_steps(opts.total_steps, opts.warmup_ratio or 0, opts.warmup_rounding)
  end
  need(is_count(warmup), "schedule.new: warmup_steps must be a count, got %s", tostring(warmup))
  local cycles = opts.num_cycles or 0.5
  need(type(cycles) == "number", "schedule.new: num_cycles must be a number, got %s", tostring(cycles))
  return setmetatable({ kind = kind, base_lr = opts.lr, total_steps = opts.total_steps, warmup_steps = warmup,
    num_cycles = cycles, factor_fn = factors[kind] }, Schedule)
end

-- The multiplier after k updates (k = 0 for the first update).
function Schedule:factor(k)
  need(type(k) == "number" and k >= 0, "schedule:factor: expected the number of updates made (>= 0), got %s", tostring(k))
  return self.factor_fn(self, k)
end

function Schedule:lr(k) return self.base_lr * self:factor(k) end

function Schedule:describe()
  return ("%s, peak lr %g, %d updates, %d warmup"):format(self.kind, self.base_lr, self.total_steps, self.warmup_steps)
end

return M
