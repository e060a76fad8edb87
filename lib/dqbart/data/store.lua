-- dqbart.data.store: tokenize what a reader yields into a store (flat
-- ids + offsets per side, see engine/dqbart_data.h), truncating as
-- transformers does.
--
-- Truncation: `tokenizer(text, max_length=N, truncation=True)` cuts the
-- text's tokens to N minus the number of special tokens the template adds
-- and then adds them, so BART's `<s> X </s>` keeps `<s>` and `</s>`, and
-- mBART's `X </s> lang` keeps `</s> lang`. The template's shape (how many
-- specials before and after the text) is read off the tokenizer by
-- encoding a probe with and without special tokens, so any tokenizer with
-- the dq.tokenizer API works unchanged.
local engine = require("dqbart.data_engine")

local M = {}

local PROBE = "Hello world, 2024."

local function merged(base, extra)
  local out = {}
  for k, v in pairs(base or {}) do out[k] = v end
  for k, v in pairs(extra) do out[k] = v end
  return out
end

local function ids_text(ids)
  local parts = {}
  for i = 1, #ids do parts[i] = tostring(ids[i]) end
  return "{" .. table.concat(parts, ", ") .. "}"
end

-- How many special ids the template puts before and after the text.
function M.special_layout(tok, encode_opts)
  local with = tok:encode(PROBE, merged(encode_opts, { special = true }))
  local without = tok:encode(PROBE, merged(encode_opts, { special = false }))
  for p = 0, #with - #without do
    local match = true
    for i = 1, #without do
      if with[p + i] ~= without[i] then match = false; break end
    end
    if match then return p, #with - #without - p end
  end
  error(("the tokenizer's ids for %q with special tokens %s do not contain its ids without them %s; "
    .. "cannot tell where truncation keeps the special tokens"):format(PROBE, ids_text(with), ids_text(without)), 0)
end

-- Append ids (a Lua list) as one sequence, cut to max_len ids: the first
-- max_len - suffix (the leading specials and the start of the text), then
-- the last `suffix` (the trailing specials). Returns true when it cut.
local function append_truncated(builder, ids, max_len, suffix)
  local n = #ids
  if max_len and n > max_len then
    builder:append(ids, 1, max_len - suffix)
    builder:append(ids, n - suffix + 1, n)
    builder:close()
    return true
  end
  builder:append(ids, 1, n)
  builder:close()
  return false
end

local function check_room(name, max_len, prefix, suffix)
  if max_len and max_len < prefix + suffix + 1 then
    error(("%s %d leaves no room for text next to the tokenizer's %d special tokens"):format(
      name, max_len, prefix + suffix), 0)
  end
end

-- Tokenize one side of a chunk and append it. A tokenizer with
-- encode_flat (dq.tokenizer's) does the whole chunk in one engine call
-- into flat tensors (all cores, no Lua tables); otherwise encode_batch.
-- Returns how many sequences were cut.
local function add_side(builder, side, texts, lines, reader)
  if side.flat then
    local ids, offsets = side.tok:encode_flat(texts, side.encode_opts)
    if tonumber(offsets.numel) ~= #texts + 1 then
      error(("%s: the tokenizer returned %d sequences for %d %s texts (lines %d..%d)"):format(reader.path,
        tonumber(offsets.numel) - 1, #texts, side.name, lines[1], lines[#lines]), 0)
    end
    local cut = builder:append_flat(ids, offsets, side.max_len, side.suffix)
    ids:free()
    offsets:free()
    return cut
  end
  local out = side.tok:encode_batch(texts, side.encode_opts)
  if type(out) ~= "table" or #out ~= #texts then
    error(("%s: the tokenizer returned %s sequences for %d %s texts (lines %d..%d)"):format(reader.path,
      type(out) == "table" and tostring(#out) or type(out), #texts, side.name, lines[1], lines[#lines]), 0)
  end
  local cut = 0
  for i = 1, #out do
    if append_truncated(builder, out[i], side.max_len, side.suffix) then cut = cut + 1 end
  end
  return cut
end

local function side_of(name, tok, encode_opts, max_len, length_name)
  local prefix, suffix = M.special_layout(tok, encode_opts)
  check_room(length_name, max_len, prefix, suffix)
  local ok, flat = pcall(function() return tok.encode_flat end)
  return { name = name, tok = tok, encode_opts = merged(encode_opts, { special = true }), max_len = max_len,
    suffix = suffix, flat = ok and type(flat) == "function" }
end

-- reader: a dqbart.data.read reader; tok and target_tok: tokenizers for
-- the two sides (often the same object). opts: max_source_length,
-- max_target_length (nil: no limit), source_options, target_options (extra
-- encode options, e.g. a language for mBART), chunk (records per
-- tokenizer call), log (function(message) for progress).
-- Returns the store and statistics.
function M.build(reader, tok, target_tok, opts)
  local source = side_of("source", tok, opts.source_options, opts.max_source_length, "max_source_length")
  local target = reader.target and side_of("target", target_tok, opts.target_options or opts.source_options,
    opts.max_target_length, "max_target_length")
  local src, tgt = engine.id_builder(), engine.id_builder()
  local stats = { examples = 0, truncated_source = 0, truncated_target = 0 }
  local chunk_records = opts.chunk or 4096
  while true do
    local chunk = reader:next_chunk(chunk_records, 16 * 2 ^ 20)
    if not chunk then break end
    stats.truncated_source = stats.truncated_source + add_side(src, source, chunk.sources, chunk.lines, reader)
    if target then
      stats.truncated_target = stats.truncated_target + add_side(tgt, target, chunk.targets, chunk.lines, reader)
    else
      for _ = 1, #chunk.sources do tgt:close() end
    end
    stats.examples = stats.examples + #chunk.sources
    if opts.log then opts.log(("tokenized %d examples of %s"):format(stats.examples, reader.path)) end
  end
  local store = {}
  store.src_ids, store.src_offsets = src:finish()
  store.tgt_ids, store.tgt_offsets = tgt:finish()
  return store, stats
end

return M
