-- dqbart.data (dq.data): sequence-to-sequence training data.
--
--   local ds = dq.data.dataset({
--     path = "train.jsonl", source = "document", target = "summary",
--     tokenizer = tok,                    -- dq.tokenizer.load(dir), or the directory
--     max_source_length = 1024, max_target_length = 128,
--   })
--   local loader = ds:loader({ batch_size = 8, seed = 28 })
--   for batch in loader:batches() do
--     -- batch.input_ids [B,S], attention_mask [B,S], decoder_input_ids [B,T],
--     -- decoder_attention_mask [B,T], labels [B,T]: CPU i64 tensors;
--     -- batch.indices: the examples (1-based); batch:to("cuda"), batch:free()
--   end
--
-- Dataset options (besides those of dqbart.data.read: format, source,
-- target, header, limit):
--   tokenizer          an object with the dq.tokenizer API, or its directory
--   target_tokenizer   another one for targets (mBART: the same files with
--                      the target language's template); default: tokenizer
--   max_source_length, max_target_length   truncation as transformers
--                      (the template's special tokens are kept)
--   model              "bart" (default) or "mbart": how decoder inputs come
--                      from labels (FORMATS.md; or shift = "start" | "wrap")
--   decoder_start_token_id   BART's first decoder input (default: the
--                      tokenizer's eos_id, 2 for BART, as its config says)
--   source_options, target_options   extra tokenizer encode options (e.g.
--                      mBART languages); target_options default to source's
--   cache              false: never read or write a token cache
--   cache_dir          keep the cache there instead of next to the data
--   tokenizer_files    files that identify the tokenizer for the cache key
--                      (default: tok.files, or the known files in tok.dir)
--   log                function(message) for progress and warnings (default:
--                      warnings to stderr)
-- The dataset keeps the tokenized examples in flat CPU tensors
-- (ds.store); ds.cache_status says "hit", "built" or "off"; ds.stats
-- (when it tokenized) counts examples and truncations.
local read = require("dqbart.data.read")
local store_builder = require("dqbart.data.store")
local cache = require("dqbart.data.cache")
local loader = require("dqbart.data.loader")
local engine = require("dqbart.data_engine")
local suggest = require("dqbart.suggest")

local M = {}
M.read = read
M.detect_format = read.detect_format
M.IGNORE_INDEX = engine.IGNORE_INDEX

local Dataset = {}
Dataset.__index = Dataset
M.Dataset = Dataset

local KNOWN = {
  path = true, format = true, source = true, target = true, header = true, limit = true, tokenizer = true,
  target_tokenizer = true,
  max_source_length = true, max_target_length = true, model = true, shift = true,
  decoder_start_token_id = true, pad_id = true, source_options = true, target_options = true, cache = true,
  cache_dir = true, tokenizer_files = true, log = true, chunk = true,
}

local function check_length(name, v)
  if v ~= nil and (type(v) ~= "number" or v < 1 or v % 1 ~= 0) then
    error(("dq.data.dataset: %s must be a positive integer, got %s"):format(name, tostring(v)), 3)
  end
end

local function resolve_tokenizer(tok, name)
  if type(tok) == "string" then return require("dqbart.tokenizer").load(tok) end
  local kind = type(tok)
  if kind ~= "table" and kind ~= "cdata" and kind ~= "userdata" then
    error(("dq.data.dataset: %s must be a tokenizer object or a tokenizer directory, got %s"):format(name, kind), 3)
  end
  for _, field in ipairs({ "encode", "encode_batch" }) do
    local ok, method = pcall(function() return tok[field] end)
    if not ok or method == nil then
      error(("dq.data.dataset: the %s has no %s method"):format(name, field), 3)
    end
  end
  return tok
end

local function shift_of(opts)
  if opts.shift ~= nil then
    if opts.shift == "start" then return engine.SHIFT_START end
    if opts.shift == "wrap" then return engine.SHIFT_WRAP end
    error(("dq.data.dataset: shift must be 'start' (BART) or 'wrap' (mBART), got %s"):format(tostring(opts.shift)), 3)
  end
  local model = opts.model or "bart"
  if model == "bart" then return engine.SHIFT_START end
  if model == "mbart" then return engine.SHIFT_WRAP end
  error(("dq.data.dataset: model must be 'bart' or 'mbart', got %s"):format(tostring(model)), 3)
end

local function default_log(message)
  if message:match("^warning") then io.stderr:write("dqbart data: ", message, "\n") end
end

function M.dataset(opts)
  if type(opts) ~= "table" then error("dq.data.dataset: expected a table of options", 2) end
  for k in pairs(opts) do
    if not KNOWN[k] then
      error(("dq.data.dataset: unknown option '%s' (did you mean '%s'?)"):format(tostring(k), suggest.nearest(k, KNOWN)), 2)
    end
  end
  if type(opts.path) ~= "string" then error("dq.data.dataset: path (the data file) is required", 2) end
  local probe, why = io.open(opts.path, "rb")
  if not probe then error(("dq.data.dataset: cannot open the data file %s"):format(why), 2) end
  probe:close()
  check_length("max_source_length", opts.max_source_length)
  check_length("max_target_length", opts.max_target_length)
  local tok = resolve_tokenizer(opts.tokenizer, "tokenizer")
  local target_tok = opts.target_tokenizer and resolve_tokenizer(opts.target_tokenizer, "target_tokenizer") or tok
  local log = opts.log or default_log
  local shift = shift_of(opts)
  local format = opts.format or read.detect_format(opts.path)
  local settings = {
    format = format, source = opts.source, target = opts.target, header = opts.header, limit = opts.limit,
    max_source_length = opts.max_source_length, max_target_length = opts.max_target_length,
    source_options = opts.source_options, target_options = opts.target_options,
  }

  local store, key, paths, cache_path, status
  if opts.cache ~= false then
    local fp = cache.tokenizer_fingerprint(tok, opts.tokenizer_files,
      { opts.source_options or {}, opts.target_options or opts.source_options or {} })
    if target_tok ~= tok then
      fp = fp .. "\ntarget " .. cache.tokenizer_fingerprint(target_tok, nil,
        { opts.target_options or opts.source_options or {} })
    end
    key = cache.key(opts.path, fp, settings)
    paths = cache.candidates(opts.path, key, opts.cache_dir)
    local notes
    store, cache_path, notes = cache.load(paths, key)
    for _, note in ipairs(notes) do log("warning: " .. note) end
    status = store and "hit" or nil
  end
  local stats
  if not store then
    local reader = read.open(opts.path, {
      format = format, source = opts.source, target = opts.target, header = opts.header, limit = opts.limit,
    })
    local ok, built, built_stats = pcall(store_builder.build, reader, tok, target_tok, {
      max_source_length = opts.max_source_length, max_target_length = opts.max_target_length,
      source_options = opts.source_options, target_options = opts.target_options, chunk = opts.chunk,
      log = opts.log,
    })
    reader:close()
    if not ok then error(built, 0) end
    store, stats = built, built_stats
    if stats.examples == 0 then error(("dq.data.dataset: %s has no examples"):format(opts.path), 2) end
    if key then
      local saved, why = cache.save(paths, key, store)
      if saved then log("wrote token cache " .. saved) else log("warning: could not write a token cache: " .. why) end
      cache_path, status = saved, "built"
    else
      status = "off"
    end
  end

  local n = tonumber(store.src_offsets.numel) - 1
  local pad_id = opts.pad_id or tok.pad_id
  if type(pad_id) ~= "number" then error("dq.data.dataset: the tokenizer has no pad_id; set pad_id", 2) end
  local start = opts.decoder_start_token_id or tok.eos_id
  if opts.target and shift == engine.SHIFT_START and type(start) ~= "number" then
    error("dq.data.dataset: set decoder_start_token_id (the tokenizer has no eos_id)", 2)
  end
  return setmetatable({
    path = opts.path, store = store, key = key, has_target = opts.target ~= nil, tokenizer = tok,
    pad_id = pad_id, decoder_start_token_id = start or 0, shift = shift,
    cache_path = cache_path, cache_status = status, stats = stats,
    n = n,
  }, Dataset)
end

function Dataset:size() return self.n end

local function check_index(self, i)
  if type(i) ~= "number" or i < 1 or i > self.n or i % 1 ~= 0 then
    error(("dataset: example %s is out of range (1..%d)"):format(tostring(i), self.n), 3)
  end
end

-- The token ids of example i (1-based) as Lua lists.
function Dataset:source_ids(i)
  check_index(self, i)
  return engine.sequence(self.store.src_ids, self.store.src_offsets, i)
end

function Dataset:target_ids(i)
  check_index(self, i)
  return engine.sequence(self.store.tgt_ids, self.store.tgt_offsets, i)
end

function Dataset:source_lengths() return engine.lengths(self.store.src_offsets) end
function Dataset:target_lengths() return engine.lengths(self.store.tgt_offsets) end

function Dataset:loader(opts) return loader.new(self, opts) end

function Dataset:free()
  for _, t in pairs(self.store) do t:free() end
end

M.loader = loader.new
return M
