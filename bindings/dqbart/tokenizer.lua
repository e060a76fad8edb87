-- dqbart.tokenizer: text to token ids and back (engine/dqbart_tokenizer.h),
-- with the results of Hugging Face's tokenizers / transformers.
--
--   local tok = dq.tokenizer.load(dir)        -- tokenizer.json, or vocab.json + merges.txt
--   tok:encode(text[, {special = true}])      -- Lua list of ids (<s> X </s> for BART)
--   tok:encode_batch(texts[, opts])           -- list of id lists, on all cores
--   tok:encode_flat(texts[, opts])            -- ids (i32 tensor), offsets (i64 tensor, n + 1)
--   tok:decode(ids[, {skip_special = false}]) -- string
--   tok:token_to_id(str), tok:id_to_token(id) -- nil when absent
--   tok:set_template("$A </s> ro_RO")         -- post-processing of single texts ("" = none)
--   tok.vocab_size, tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id, tok.mask_id (nil when absent)
--   tok.handle (the dq_tokenizer*), tok.dir, tok.files (files that define it)
--   dq.tokenizer.train_bpe{files = {...} or texts = {...}, vocab_size =, min_frequency =,
--                          special_tokens =, out = dir}
--
-- Ids are the tokenizer's own (0-based, as in transformers). Texts are
-- UTF-8 byte strings; invalid UTF-8 reads as U+FFFD.
local core = require("dqbart.ffi")
local tensor = require("dqbart.tensor")
local ffi, C, check = core.ffi, core.C, core.check

local M = {}
local Tokenizer = {}
Tokenizer.__index = Tokenizer

local FILES = { "tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json" }

local function file_exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

local function role(handle, name)
  local id = C.dq_tokenizer_role_id(handle, name)
  if id < 0 then return nil end
  return id
end

-- Load a directory (tokenizer.json preferred, else vocab.json + merges.txt)
-- or a tokenizer.json path. opts.template: as tok:set_template.
function M.load(path, opts)
  if type(path) ~= "string" then error("dq.tokenizer.load: expected a directory or tokenizer.json path", 2) end
  local out = ffi.new("dq_tokenizer *[1]")
  check(C.dq_tokenizer_load(path, out), 2)
  local handle = ffi.gc(out[0], C.dq_tokenizer_free)
  local dir = path
  if not (file_exists(path .. "/tokenizer.json") or file_exists(path .. "/vocab.json")) then
    dir = path:match("^(.*)/[^/]*$") or "." -- a tokenizer.json path
  end
  local self = setmetatable({ handle = handle, dir = dir, files = {} }, Tokenizer)
  for _, name in ipairs(FILES) do
    if file_exists(dir .. "/" .. name) then self.files[#self.files + 1] = dir .. "/" .. name end
  end
  self.vocab_size = C.dq_tokenizer_vocab_size(handle)
  self.pad_id, self.bos_id, self.eos_id = role(handle, "pad"), role(handle, "bos"), role(handle, "eos")
  self.unk_id, self.mask_id = role(handle, "unk"), role(handle, "mask")
  if opts and opts.template then self:set_template(opts.template) end
  return self
end

local function flags_of(opts)
  if opts and opts.special == false then return 0 end
  return C.DQ_TOKENIZE_SPECIAL
end

local buffer_ct = ffi.typeof("int32_t[?]")
local count_ct = ffi.typeof("int64_t[1]")

function Tokenizer:encode(text, opts)
  if type(text) ~= "string" then error("tok:encode: text must be a string, got " .. type(text), 2) end
  local cap = self._cap or 1024
  local buf = self._buf or buffer_ct(cap)
  local count = count_ct()
  check(C.dq_tokenizer_encode(self.handle, text, #text, flags_of(opts), buf, cap, count), 2)
  local n = tonumber(count[0])
  if n > cap then
    cap = n
    buf = buffer_ct(cap)
    check(C.dq_tokenizer_encode(self.handle, text, #text, flags_of(opts), buf, cap, count), 2)
  end
  self._buf, self._cap = buf, cap
  local ids = {}
  for i = 0, n - 1 do ids[i + 1] = buf[i] end
  return ids
end

-- All texts in one engine call: ids (i32 [total]) and offsets (i64 [n + 1])
-- tensors, sequence i (1-based) at ids[offsets[i-1] .. offsets[i]).
function Tokenizer:encode_flat(texts, opts)
  if type(texts) ~= "table" then error("tok:encode_flat: expected a list of strings", 2) end
  local n = #texts
  local text_offsets = ffi.new("int64_t[?]", n + 1)
  local total = 0
  for i = 1, n do
    local s = texts[i]
    if type(s) ~= "string" then error(("tok:encode_batch: texts[%d] is a %s, not a string"):format(i, type(s)), 2) end
    text_offsets[i - 1] = total
    total = total + #s
  end
  text_offsets[n] = total
  local ids, offsets = tensor.undefined(), tensor.undefined()
  check(C.dq_tokenizer_encode_batch(self.handle, table.concat(texts), text_offsets, n, flags_of(opts), ids, offsets), 2)
  return ids, offsets
end

function Tokenizer:encode_batch(texts, opts)
  local ids, offsets = self:encode_flat(texts, opts)
  local p = ffi.cast("const int32_t *", ids.data)
  local off = ffi.cast("const int64_t *", offsets.data)
  local out = {}
  for i = 1, #texts do
    local seq, k = {}, 0
    for j = tonumber(off[i - 1]), tonumber(off[i]) - 1 do
      k = k + 1
      seq[k] = p[j]
    end
    out[i] = seq
  end
  ids:free()
  offsets:free()
  return out
end

function Tokenizer:decode(ids, opts)
  if type(ids) ~= "table" then error("tok:decode: expected a list of ids", 2) end
  local n = #ids
  local buf = ffi.new("int32_t[?]", n > 0 and n or 1)
  for i = 1, n do buf[i - 1] = ids[i] end
  local text, len = ffi.new("char *[1]"), count_ct()
  check(C.dq_tokenizer_decode(self.handle, buf, n, (opts and opts.skip_special) and 1 or 0, text, len), 2)
  local s = ffi.string(text[0], len[0])
  C.dq_tokenizer_free_text(text[0])
  return s
end

function Tokenizer:token_to_id(token)
  if type(token) ~= "string" then error("tok:token_to_id: expected a string", 2) end
  local id = C.dq_tokenizer_token_to_id(self.handle, token, #token)
  if id < 0 then return nil end
  return id
end

function Tokenizer:id_to_token(id)
  local len = count_ct()
  local p = C.dq_tokenizer_id_to_token(self.handle, id, len)
  if p == nil then return nil end
  return ffi.string(p, len[0])
end

-- 1 when the id is a special added token (dropped by decode with skip_special).
function Tokenizer:is_special(id) return C.dq_tokenizer_is_special(self.handle, id) == 1 end

-- Post-processing of single texts: "$A" for the text, other items are
-- tokens: "$A </s> ro_RO" (mBART target), "<s> $A </s>"; "" for none.
function Tokenizer:set_template(single)
  check(C.dq_tokenizer_set_template(self.handle, single), 2)
  return self
end

-- Train a byte-level BPE as tokenizers' ByteLevelBPETokenizer does and
-- write vocab.json, merges.txt and tokenizer.json into opts.out.
function M.train_bpe(opts)
  if type(opts) ~= "table" or type(opts.out) ~= "string" then
    error("dq.tokenizer.train_bpe: expected {files = {...} or texts = {...}, vocab_size =, out = dir}", 2)
  end
  local files, texts = opts.files or {}, opts.texts or {}
  if #files == 0 and #texts == 0 then error("dq.tokenizer.train_bpe: give files = {...} or texts = {...}", 2) end
  local specials = opts.special_tokens or { "<s>", "<pad>", "</s>", "<unk>", "<mask>" }
  local keep = {} -- keep the Lua strings alive during the call
  local spec_arr = ffi.new("const char *[?]", #specials + 1)
  for i, s in ipairs(specials) do keep[#keep + 1] = s; spec_arr[i - 1] = s end
  local file_arr = ffi.new("const char *[?]", #files + 1)
  for i, f in ipairs(files) do keep[#keep + 1] = f; file_arr[i - 1] = f end
  local text_offsets = ffi.new("int64_t[?]", #texts + 1)
  local total = 0
  for i, s in ipairs(texts) do
    text_offsets[i - 1] = total
    total = total + #s
  end
  text_offsets[#texts] = total
  local data = table.concat(texts)
  local cfg = ffi.new("dq_bpe_train_config")
  cfg.vocab_size = opts.vocab_size or 30000
  cfg.min_frequency = opts.min_frequency or 0
  cfg.special_tokens = spec_arr
  cfg.n_special_tokens = #specials
  check(C.dq_bpe_train(cfg, file_arr, #files, data, text_offsets, #texts, opts.out), 2)
  return opts.out
end

return M
