-- dqbart.trainer_eval: scoring a model on a validation or test set.
--
--   trainer_eval.loss(model, dataset, { device =, batch_size = }) -> mean token cross-entropy
--   trainer_eval.score(model, split, opts) -> { loss = ..., rouge1 = ..., ... }
--
-- score() always computes the loss (cheap: one inference forward per
-- batch); for a generation metric (rouge*, bleu) it also generates with
-- dqbart.evaluate when that module is there. `metric` names what the run
-- selects its best checkpoint by; METRICS says which way is better.
local loss = require("dqbart.loss")
local tensor = require("dqbart.tensor")
local trainer_batch = require("dqbart.trainer_batch")

local M = {}

-- true: higher is better.
M.HIGHER_IS_BETTER = { loss = false, rougeLsum = true, rougeL = true, rouge1 = true, rouge2 = true, bleu = true }

function M.better(metric, a, b)
  if b == nil then return a ~= nil and a == a end
  if a == nil or a ~= a then return false end
  if M.HIGHER_IS_BETTER[metric] == false then return a < b end
  return a > b
end

-- The mean over target tokens of the cross-entropy (no label smoothing):
-- inference forwards, one value read per batch.
function M.loss(model, ds, opts)
  opts = opts or {}
  local was_training = model:info().training
  model:eval()
  local device = trainer_batch.new(opts.device or "cpu")
  local value = tensor.zeros({}, { device = opts.device })
  local loader = ds:loader({ batch_size = opts.batch_size or 16, max_tokens = opts.max_tokens, shuffle = false })
  local total, count = 0, 0
  for b in loader:batches() do
    local db = device:put(b)
    model:forward(db)
    loss.cross_entropy(model:output("logits"), db.labels, { value = value })
    local n = b.target_tokens
    total = total + value:item() * n
    count = count + n
    b:free()
  end
  loader:free()
  device:free()
  value:free()
  if was_training then model:train() end
  return count > 0 and total / count or 0 / 0
end

-- The generation metrics module (lib/dqbart/evaluate.lua), when present.
local function evaluate_module()
  if not package.searchpath("dqbart.evaluate", package.path) then return nil end
  return require("dqbart.evaluate")
end
M.evaluate_module = evaluate_module

function M.generation_available() return evaluate_module() ~= nil end

-- The raw (source, target) texts of a data file, for generation.
function M.examples(path, data_opts, limit)
  local read = require("dqbart.data.read")
  local r = read.open(path, { format = data_opts.format, source = data_opts.source, target = data_opts.target,
    header = data_opts.header, limit = limit })
  local out = {}
  while true do
    local chunk = r:next_chunk(4096)
    if not chunk then break end
    for i, s in ipairs(chunk.sources) do out[#out + 1] = { source = s, target = chunk.targets[i] } end
  end
  r:close()
  return out
end

-- split: { dataset =, path =, limit = } (the tokenized set for the loss,
-- the file for generation). opts: metric, device, batch_size, tokenizer,
-- data (the recipe's data section: fields), generation (beams, ...).
-- Returns the scores, with `metric` set to the one actually used (loss
-- when generation is not available).
function M.score(model, split, opts)
  local t0 = require("dqbart.progress").now()
  local scores = { loss = M.loss(model, split.dataset, { device = opts.device, batch_size = opts.batch_size }) }
  local metric = opts.metric or "loss"
  if metric ~= "loss" then
    local evaluate = evaluate_module()
    if evaluate then
      split.examples = split.examples or M.examples(split.path, opts.data, split.limit)
      local gen = {}
      for k, v in pairs(opts.generation or {}) do gen[k] = v end
      gen.metric = metric
      gen.device = opts.device
      local was_training = model:info().training
      model:eval()
      local got = evaluate.run(model, opts.tokenizer, split.examples, gen)
      if was_training then model:train() end
      for k, v in pairs(got or {}) do
        if type(v) == "number" then scores[k] = v end
      end
    else
      metric = "loss"
    end
  end
  scores.metric = metric
  scores.seconds = require("dqbart.progress").now() - t0
  return scores
end

return M
