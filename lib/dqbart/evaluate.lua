-- dqbart.evaluate: generate for a set of examples and score the
-- predictions against the references (ROUGE or BLEU, dq.metrics) in one go.
-- The trainer's validation and `dqbart eval` use it.
--
--   local evaluate = require("dqbart.evaluate")
--   local scores = evaluate.run(model, tokenizer, examples, {
--     metric = "rougeLsum",              -- or "rouge", "rouge1", "rouge2", "rougeL", "bleu"
--     num_beams = 6, max_length = 62, ...,  -- generation options (dq.generate; `beams` works too)
--     batch_size = 16, max_source_length = 1024, progress = function(done, total) end,
--   })
--   scores.rouge1, scores.rouge2, scores.rougeL, scores.rougeLsum   -- F x 100 (rouge metrics)
--   scores.bleu                                                      -- sacreBLEU score (bleu)
--   scores.metric        the metric asked for ("rouge" reads as "rougeLsum")
--   scores.count         examples scored
--   scores.predictions   the generated texts, in the examples' order
--   scores.details       { rouge = dq.metrics.rouge's table } or { bleu = dq.metrics.bleu's table }
--   scores.generation    { seconds =, new_tokens =, tokens_per_second =, options = resolved options }
-- Only the metric values and count are numbers at the top level, so a
-- caller can copy every number as a score.
--
-- examples: a list of { source = text, target = text } (what the trainer
-- passes), or { sources = {...}, targets = {...} }, or a dq.data dataset
-- (its token ids are the sources, cut to opts.max_source_length or the
-- model's max_position_embeddings; references are its target ids decoded
-- with special tokens skipped).
--
-- ROUGE follows DQBART.md section 5: rouge-score with the Porter stemmer,
-- F-measures x 100; for rougeLsum the texts are split into sentences first
-- (opts.split_sentences, default true: dq.metrics' rule-based splitter, not
-- nltk's punkt) unless opts.sentence_sep names a marker the texts carry.
-- opts.rouge passes further options to dq.metrics.rouge (e.g. bootstrap).
-- Generation options not given take the model's own defaults; the
-- trainer's key `early_stopping` may be a boolean or "never".
local generate = require("dqbart.generate")
local metrics = require("dqbart.metrics")
local progress = require("dqbart.progress")

local M = {}

local ROUGE_METRICS = { rouge = true, rouge1 = true, rouge2 = true, rougeL = true, rougeLsum = true }
M.METRICS = { "rouge", "rouge1", "rouge2", "rougeL", "rougeLsum", "bleu" }

-- Keys of opts that are not generation options.
local OWN_KEYS = { metric = true, rouge = true, split_sentences = true, sentence_sep = true, keep = true,
  stem = true }

local function sources_and_refs(model, tokenizer, examples, opts)
  if type(examples) ~= "table" then error("evaluate.run: examples must be a list or a dataset", 3) end
  if examples.source_ids and examples.size then
    local n = examples:size()
    local ids, refs = {}, {}
    for i = 1, n do
      ids[i] = examples:source_ids(i)
      refs[i] = tokenizer:decode(examples:target_ids(i), { skip_special = true })
    end
    local max_len = opts.max_source_length or model:info().max_position_embeddings
    return nil, generate.truncate(tokenizer, ids, max_len), refs
  end
  if examples.sources then
    if type(examples.targets) ~= "table" or #examples.targets ~= #examples.sources then
      error("evaluate.run: { sources = ..., targets = ... } need lists of the same length", 3)
    end
    return examples.sources, nil, examples.targets
  end
  local texts, refs = {}, {}
  for i, e in ipairs(examples) do
    if type(e) ~= "table" or type(e.source) ~= "string" or type(e.target) ~= "string" then
      error(("evaluate.run: example %d must be { source = text, target = text }"):format(i), 3)
    end
    texts[i], refs[i] = e.source, e.target
  end
  return texts, nil, refs
end

local function generation_opts(opts)
  local g = {}
  for k, v in pairs(opts) do
    if not OWN_KEYS[k] then g[k] = v end
  end
  if g.beams ~= nil and g.num_beams ~= nil then g.beams = nil end
  g.device = nil -- the model is already where it runs
  return g
end

function M.score(predictions, references, metric, opts)
  opts = opts or {}
  local out = { metric = metric == "rouge" and "rougeLsum" or metric, count = #predictions }
  if metric == "bleu" then
    local b = metrics.bleu(predictions, references)
    out.bleu = b.score
    out.details = { bleu = b }
    return out
  end
  local ro = { stem = opts.stem ~= false }
  if opts.sentence_sep then ro.sentence_sep = opts.sentence_sep
  else ro.split_sentences = opts.split_sentences ~= false end
  for k, v in pairs(opts.rouge or {}) do ro[k] = v end
  local r = metrics.rouge(predictions, references, ro)
  for _, name in ipairs(r.types) do out[name] = r[name].f end
  out.details = { rouge = r }
  return out
end

function M.run(model, tokenizer, examples, opts)
  opts = opts or {}
  local metric = opts.metric or "rouge"
  if not (ROUGE_METRICS[metric] or metric == "bleu") then
    error(("evaluate.run: metric %s is not one of %s"):format(tostring(metric), table.concat(M.METRICS, ", ")), 2)
  end
  if not tokenizer then error("evaluate.run: a tokenizer is needed to decode predictions", 2) end
  local texts, ids, refs = sources_and_refs(model, tokenizer, examples, opts)
  if #refs == 0 then error("evaluate.run: no examples", 2) end
  local gen = generation_opts(opts)
  local t0 = progress.now()
  local predictions, seqs
  if texts then
    predictions, seqs = generate.texts(model, tokenizer, texts, gen)
  else
    seqs = generate.sources(model, ids, gen)
    predictions = {}
    for i, s in ipairs(seqs) do predictions[i] = generate.decode(tokenizer, s, gen.clean) end
  end
  local seconds = progress.now() - t0
  local new_tokens = 0
  for _, s in ipairs(seqs) do new_tokens = new_tokens + #s - 1 end
  local out = M.score(predictions, refs, metric, opts)
  out.predictions = predictions
  out.references = refs
  out.generation = { seconds = seconds, new_tokens = new_tokens,
    tokens_per_second = new_tokens / math.max(seconds, 1e-9),
    options = generate.options(model, gen) }
  return out
end

return M
