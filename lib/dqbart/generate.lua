-- dq.generate: sequence generation with a BART / mBART model, as
-- transformers' generate does it (engine/dqbart_generate.h: greedy search,
-- beam search, sampling; the processors min_length, no_repeat_ngram_size,
-- forced_bos_token_id / forced_eos_token_id).
--
--   local seqs, scores = dq.generate(model, input_ids, attention_mask, opts)
--     -- input_ids: a [B, S] tensor (attention_mask a tensor or nil), or a
--     -- list of id lists of any lengths (padded here, attention_mask nil);
--     -- seqs: one list of ids per source, starting with the decoder start
--     -- token, ending with EOS when one ended it, without padding;
--     -- scores: beam search's length-penalized scores (nil otherwise)
--   local texts = dq.generate.texts(model, tokenizer, texts, opts)
--   local seqs = dq.generate.sources(model, list_of_id_lists, opts)
--   dq.generate.options(model, opts)   -- the options generation will use
--   dq.generate.release(model)         -- free the model's cached caches now
--
-- opts: the generation options (transformers' names, over the model's
-- generation_config.json / config.json defaults): num_beams (or beams),
-- max_length, max_new_tokens, min_length, no_repeat_ngram_size,
-- early_stopping (true, false, "never"), length_penalty, do_sample,
-- temperature, top_k, top_p, seed, decoder_start_token_id, eos_token_id,
-- pad_token_id, forced_bos_token_id, forced_eos_token_id (false: none);
-- and for sources / texts:
--   batch_size = 16        sources per engine call
--   max_source_length      truncate sources as transformers' tokenizer
--                          does (default: the model's max_position_embeddings)
--   sort = true            batch sources of similar length together (the
--                          results come back in the input order)
--   progress               function(done, total) after each batch
--   on_batch               function(first_index, sequences) as batches finish
--                          (indices into the input, in batch order)
--   workspace              a dqbart.generate_engine workspace to use (default:
--                          one cached per model, freed with it or by release)
--   clean = true           texts(): strip the decoded text and replace
--                          newlines by spaces
-- A model's last forward outputs are overwritten (the encoder runs through
-- it); the model is used in eval mode and its mode is restored.
local engine = require("dqbart.generate_engine")
local tensor = require("dqbart.tensor")
local ffi = require("ffi")

local M = {}

local DRIVER_KEYS = { batch_size = true, max_source_length = true, sort = true, progress = true, on_batch = true,
  workspace = true, clean = true, metric = true, device = true }
M.DRIVER_KEYS = DRIVER_KEYS

-- The generation options alone (driver keys dropped).
local function gen_opts(opts)
  local out = {}
  for k, v in pairs(opts or {}) do
    if not DRIVER_KEYS[k] then out[k] = v end
  end
  return out
end
M.generation_options = gen_opts

-- ---- workspaces cached per model -----------------------------------------------------------

local cache = setmetatable({}, { __mode = "k" })

local function workspace_for(model, opts)
  if opts and opts.workspace then return opts.workspace end
  local ws = cache[model]
  if not ws then
    ws = engine.workspace()
    cache[model] = ws
  end
  return ws
end
M.workspace = workspace_for

function M.release(model)
  local ws = cache[model]
  if ws then
    ws:free()
    cache[model] = nil
  end
end

function M.options(model, opts) return engine.resolve(model, gen_opts(opts)) end

-- ---- tensors in, lists out ---------------------------------------------------------------

-- A [B, S] i64 tensor and its mask from ragged id lists, padded with pad.
local function pad_batch(lists, pad)
  local B, S = #lists, 1
  for i = 1, B do
    if #lists[i] == 0 then error(("generate: source %d has no tokens"):format(i), 3) end
    if #lists[i] > S then S = #lists[i] end
  end
  local ids = tensor.empty({ B, S }, { dtype = "i64" })
  local mask = tensor.empty({ B, S }, { dtype = "i64" })
  local pi, pm = ffi.cast("int64_t*", ids.data), ffi.cast("int64_t*", mask.data)
  local ragged = false
  for b = 1, B do
    local row = lists[b]
    for s = 1, S do
      local k = (b - 1) * S + s - 1
      local v = row[s]
      if v == nil then
        pi[k], pm[k] = pad, 0
        ragged = true
      else
        pi[k], pm[k] = v, 1
      end
    end
  end
  if not ragged then
    mask:free()
    mask = nil
  end
  return ids, mask
end
M.pad_batch = pad_batch

local function read_results(seqs, lens, scores, beams)
  local B, L = tonumber(seqs.shape[0]), tonumber(seqs.shape[1])
  local ps, pl = ffi.cast("const int64_t*", seqs.data), ffi.cast("const int64_t*", lens.data)
  local pf = ffi.cast("const float*", scores.data)
  local out, sc = {}, beams and {} or nil
  for b = 0, B - 1 do
    local row, n = {}, tonumber(pl[b])
    for j = 0, n - 1 do row[j + 1] = tonumber(ps[b * L + j]) end
    out[b + 1] = row
    if sc then sc[b + 1] = pf[b] end
  end
  return out, sc
end

local function generate_ids(model, input_ids, attention_mask, opts)
  opts = opts or {}
  local o = engine.options(model, gen_opts(opts), 3)
  local ids, mask, own = input_ids, attention_mask, false
  if not tensor.is_tensor(input_ids) then
    if type(input_ids) ~= "table" then error("generate: input_ids must be a tensor or a list of id lists", 3) end
    local pad = o.pad_token_id >= 0 and tonumber(o.pad_token_id) or 1
    ids, mask = pad_batch(input_ids, pad)
    own = true
  end
  local ws = workspace_for(model, opts)
  local ok, seqs, lens, scores = pcall(engine.run, model, ids, mask, o, ws)
  if own then
    ids:free()
    if mask then mask:free() end
  end
  if not ok then error(seqs, 3) end
  local out, sc = read_results(seqs, lens, scores, o.do_sample == 0 and o.num_beams > 1)
  seqs:free()
  lens:free()
  scores:free()
  return out, sc
end

function M.ids(model, input_ids, attention_mask, opts)
  return generate_ids(model, input_ids, attention_mask, opts)
end

-- ---- many sources: sorted batches, input order restored ------------------------------------

-- sources: a list of id lists. Returns a list of id lists (and scores for
-- beam search) in the input order.
function M.sources(model, sources, opts)
  opts = opts or {}
  local n = #sources
  local batch_size = opts.batch_size or 16
  if type(batch_size) ~= "number" or batch_size < 1 or batch_size % 1 ~= 0 then
    error(("generate: batch_size is %s; expected a positive integer"):format(tostring(batch_size)), 2)
  end
  local order = {}
  for i = 1, n do order[i] = i end
  if opts.sort ~= false then
    -- Longest first: the first batch shows at once whether memory suffices.
    table.sort(order, function(a, b)
      local la, lb = #sources[a], #sources[b]
      if la ~= lb then return la > lb end
      return a < b
    end)
  end
  local P = model:info().max_position_embeddings
  for i = 1, n do
    if #sources[i] > P then
      error(("generate: source %d has %d tokens, more than max_position_embeddings = %d of the model; "
        .. "truncate it (generate.truncate, or max_source_length with texts)"):format(i, #sources[i], P), 2)
    end
  end
  local results, scores = {}, {}
  local done = 0
  for first = 1, n, batch_size do
    local last = math.min(n, first + batch_size - 1)
    local batch = {}
    for j = first, last do batch[#batch + 1] = sources[order[j]] end
    local seqs, sc = generate_ids(model, batch, nil, opts)
    for j = first, last do
      results[order[j]] = seqs[j - first + 1]
      if sc then scores[order[j]] = sc[j - first + 1] end
    end
    done = last
    if opts.on_batch then
      local idx = {}
      for j = first, last do idx[#idx + 1] = order[j] end
      opts.on_batch(idx, seqs)
    end
    if opts.progress then opts.progress(done, n) end
  end
  return results, next(scores) and scores or nil
end

-- ---- texts ------------------------------------------------------------------------------------

-- Id lists cut to max_len as transformers' tokenizer(..., truncation=True,
-- max_length=N) cuts them: the template's leading and trailing special
-- tokens are kept (read off the tokenizer). Changes and returns `lists`.
function M.truncate(tokenizer, lists, max_len)
  if not max_len then return lists end
  local prefix, suffix = require("dqbart.data.store").special_layout(tokenizer)
  if max_len < prefix + suffix + 1 then
    error(("generate: max_source_length %d leaves no room next to the tokenizer's %d special tokens"):format(
      max_len, prefix + suffix), 2)
  end
  for i, ids in ipairs(lists) do
    local n = #ids
    if n > max_len then
      local cut = {}
      for j = 1, max_len - suffix do cut[j] = ids[j] end
      for j = n - suffix + 1, n do cut[#cut + 1] = ids[j] end
      lists[i] = cut
    end
  end
  return lists
end

-- Token id lists of texts, truncated to max_len (see truncate).
function M.encode(tokenizer, texts, max_len)
  return M.truncate(tokenizer, tokenizer:encode_batch(texts), max_len)
end

-- Decoded text of a generated sequence (special tokens skipped).
function M.decode(tokenizer, ids, clean)
  local text = tokenizer:decode(ids, { skip_special = true })
  if clean ~= false then text = text:gsub("[\r\n]+", " "):gsub("^%s+", ""):gsub("%s+$", "") end
  return text
end

function M.texts(model, tokenizer, texts, opts)
  opts = opts or {}
  if type(texts) ~= "table" then error("generate.texts: expected a list of strings", 2) end
  local max_len = opts.max_source_length or model:info().max_position_embeddings
  local sources = M.encode(tokenizer, texts, max_len)
  local seqs, scores = M.sources(model, sources, opts)
  local out = {}
  for i, ids in ipairs(seqs) do out[i] = M.decode(tokenizer, ids, opts.clean) end
  return out, seqs, scores
end

return setmetatable(M, {
  __call = function(_, model, input_ids, attention_mask, opts)
    return generate_ids(model, input_ids, attention_mask, opts)
  end,
})
