-- dqbart.data_engine: the engine's data functions (engine/dqbart_data.h)
-- for lib/dqbart/data*.lua. (The library module is dqbart.data; this one
-- has another name because bindings/ and lib/ share one module tree.)
--
--   hash(string[, seed]) / hash_file(path[, seed]) -> 16 hex digits (XXH64)
--   plan(src_offsets, tgt_offsets|nil, opts) -> order, starts, num_batches
--   pack(store, examples, opts[, outs]) -> { input_ids = ..., ... }
--   cache_save(path, key_hex, store) / cache_load(path, key_hex) -> store
--   id_builder() -> growable i32 ids + i64 offsets, :finish() -> ids, offsets
--
-- A store is { src_ids, src_offsets, tgt_ids, tgt_offsets } (CPU tensors,
-- see dqbart_data.h for their layout).
local core = require("dqbart.ffi")
local tensor = require("dqbart.tensor")
local ffi, C, check = core.ffi, core.C, core.check

local M = {}

local u64_box = ffi.typeof("uint64_t[1]")
local i64_box = ffi.typeof("int64_t[1]")

local function hex(u64) return bit.tohex(u64, 16) end

local function from_hex(s)
  assert(type(s) == "string" and #s == 16 and s:match("^%x+$"), "a key is 16 hex digits")
  local hi, lo = tonumber(s:sub(1, 8), 16), tonumber(s:sub(9, 16), 16)
  return ffi.new("uint64_t", hi) * 4294967296ULL + lo
end

-- Seeds are numbers below 2^53 or 16-hex-digit strings (chaining hashes).
local function seed_of(seed)
  if seed == nil then return 0ULL end
  if type(seed) == "string" then return from_hex(seed) end
  return ffi.new("uint64_t", seed)
end

function M.hash(s, seed)
  return hex(C.dq_data_hash(s, #s, seed_of(seed)))
end

function M.hash_file(path, seed)
  local out = u64_box()
  check(C.dq_data_hash_file(path, seed_of(seed), out), 2)
  return hex(out[0])
end

-- opts: batch_size, max_tokens, shuffle (bool), chunk_size, seed, epoch.
function M.plan(src_offsets, tgt_offsets, opts)
  local order, starts, count = tensor.undefined(), tensor.undefined(), i64_box()
  check(C.dq_data_plan(order, starts, count, src_offsets, tgt_offsets, opts.batch_size or 0,
    opts.max_tokens or 0, opts.shuffle and 1 or 0, opts.chunk_size or 0, opts.seed or 0, opts.epoch or 0), 2)
  return order, starts, tonumber(count[0])
end

M.SHIFT_START, M.SHIFT_WRAP = C.DQ_DATA_SHIFT_START, C.DQ_DATA_SHIFT_WRAP
M.IGNORE_INDEX = C.DQ_DATA_IGNORE_INDEX

-- examples: i64 tensor of 0-based indices. opts: pad_id, decoder_start_id,
-- shift, pad_multiple, with_target. outs (optional): preallocated tensors
-- by name (fixed shapes).
function M.pack(store, examples, opts, outs)
  outs = outs or {}
  local b = {
    input_ids = outs.input_ids or tensor.undefined(),
    attention_mask = outs.attention_mask or tensor.undefined(),
  }
  if opts.with_target then
    b.decoder_input_ids = outs.decoder_input_ids or tensor.undefined()
    b.decoder_attention_mask = outs.decoder_attention_mask or tensor.undefined()
    b.labels = outs.labels or tensor.undefined()
  end
  check(C.dq_data_pack(b.input_ids, b.attention_mask, b.decoder_input_ids, b.decoder_attention_mask, b.labels,
    store.src_ids, store.src_offsets, opts.with_target and store.tgt_ids or nil,
    opts.with_target and store.tgt_offsets or nil, examples, opts.pad_id, opts.decoder_start_id or 0,
    opts.shift or M.SHIFT_START, opts.pad_multiple or 1), 2)
  return b
end

function M.cache_save(path, key_hex, store)
  check(C.dq_data_cache_save(path, from_hex(key_hex), store.src_ids, store.src_offsets, store.tgt_ids,
    store.tgt_offsets), 2)
end

-- Returns the store, or nil, message, code (C.DQ_ERR_IO: no readable file;
-- C.DQ_ERR_FORMAT: corrupt, truncated or built for another key).
function M.cache_load(path, key_hex)
  local s = {
    src_ids = tensor.undefined(), src_offsets = tensor.undefined(),
    tgt_ids = tensor.undefined(), tgt_offsets = tensor.undefined(),
  }
  local status = C.dq_data_cache_load(path, from_hex(key_hex), s.src_ids, s.src_offsets, s.tgt_ids, s.tgt_offsets)
  if status ~= 0 then return nil, core.last_error(), status end
  return s
end
M.ERR_IO, M.ERR_FORMAT = C.DQ_ERR_IO, C.DQ_ERR_FORMAT

-- ---- building a store -----------------------------------------------------------

-- Sequences of ids appended one by one into flat growable buffers; the
-- capacity doubles, so appending is amortized O(1) per id.
local Builder = {}
Builder.__index = Builder

local function grow(t, count, need, dtype, elem)
  local cap = tonumber(t.numel)
  if need <= cap then return t end
  while cap < need do cap = cap * 2 end
  local bigger = tensor.empty({ cap }, { dtype = dtype })
  ffi.copy(bigger.data, t.data, count * elem)
  t:free()
  return bigger
end

function M.id_builder()
  local self = setmetatable({
    ids = tensor.empty({ 4096 }, { dtype = "i32" }), n_ids = 0,
    offsets = tensor.empty({ 1024 }, { dtype = "i64" }), n_seq = 0,
  }, Builder)
  self.id_ptr = ffi.cast("int32_t*", self.ids.data)
  self.off_ptr = ffi.cast("int64_t*", self.offsets.data)
  self.off_ptr[0] = 0
  return self
end

-- Append ids[first..last] (a Lua list, 1-based, inclusive) to the current
-- sequence.
function Builder:append(ids, first, last)
  local n = last - first + 1
  if n <= 0 then return end
  if self.n_ids + n > tonumber(self.ids.numel) then
    self.ids = grow(self.ids, self.n_ids, self.n_ids + n, "i32", 4)
    self.id_ptr = ffi.cast("int32_t*", self.ids.data)
  end
  local p, base = self.id_ptr, self.n_ids - first
  for i = first, last do p[base + i] = ids[i] end
  self.n_ids = self.n_ids + n
end

-- Append n ids from an int32_t pointer to the current sequence.
function Builder:append_ptr(p, n)
  if n <= 0 then return end
  if self.n_ids + n > tonumber(self.ids.numel) then
    self.ids = grow(self.ids, self.n_ids, self.n_ids + n, "i32", 4)
    self.id_ptr = ffi.cast("int32_t*", self.ids.data)
  end
  ffi.copy(self.id_ptr + self.n_ids, p, n * 4)
  self.n_ids = self.n_ids + n
end

-- Append every sequence of a flat (ids, offsets) pair, each cut to
-- max_len ids keeping its last `suffix` ids (see dqbart.data.store).
-- Returns how many were cut.
function Builder:append_flat(ids, offsets, max_len, suffix)
  local off = ffi.cast("int64_t*", offsets.data)
  local p = ffi.cast("int32_t*", ids.data)
  local cut = 0
  for i = 0, tonumber(offsets.numel) - 2 do
    local a, b = tonumber(off[i]), tonumber(off[i + 1])
    if max_len and b - a > max_len then
      self:append_ptr(p + a, max_len - suffix)
      self:append_ptr(p + b - suffix, suffix)
      cut = cut + 1
    else
      self:append_ptr(p + a, b - a)
    end
    self:close()
  end
  return cut
end

-- Close the current sequence.
function Builder:close()
  if self.n_seq + 2 > tonumber(self.offsets.numel) then
    self.offsets = grow(self.offsets, self.n_seq + 1, self.n_seq + 2, "i64", 8)
    self.off_ptr = ffi.cast("int64_t*", self.offsets.data)
  end
  self.n_seq = self.n_seq + 1
  self.off_ptr[self.n_seq] = self.n_ids
end

-- Exact-size ids (i32 [total]) and offsets (i64 [n + 1]); the builder is
-- spent afterwards.
function Builder:finish()
  local ids = tensor.empty({ self.n_ids }, { dtype = "i32" })
  local offsets = tensor.empty({ self.n_seq + 1 }, { dtype = "i64" })
  ffi.copy(ids.data, self.ids.data, self.n_ids * 4)
  ffi.copy(offsets.data, self.offsets.data, (self.n_seq + 1) * 8)
  self.ids:free()
  self.offsets:free()
  return ids, offsets
end

-- ---- reading a store ------------------------------------------------------------------

-- The ids of sequence i (1-based) as a Lua list.
function M.sequence(ids, offsets, i)
  local off = ffi.cast("int64_t*", offsets.data)
  local p = ffi.cast("int32_t*", ids.data)
  local out = {}
  for k = tonumber(off[i - 1]), tonumber(off[i]) - 1 do out[#out + 1] = p[k] end
  return out
end

-- Lengths of every sequence as a Lua list.
function M.lengths(offsets)
  local off = ffi.cast("int64_t*", offsets.data)
  local out = {}
  for i = 1, tonumber(offsets.numel) - 1 do out[i] = tonumber(off[i] - off[i - 1]) end
  return out
end

-- Entry i (0-based) of a CPU i64 tensor as a Lua number.
function M.i64_at(t, i)
  return tonumber(ffi.cast("int64_t*", t.data)[i])
end

return M
