-- dqbart.data.loader: batches of a dataset, epoch after epoch, with a state
-- that resumes exactly.
--
--   local loader = ds:loader({ batch_size = 8, seed = 28 })      -- or max_tokens = 4096
--   for batch in loader:batches() do ... end    -- the rest of the current epoch
--   local state = loader:state()                -- { epoch =, position =, ... }
--   loader:set_state(state)                     -- continue exactly there
--
-- Options:
--   batch_size   examples per batch (a cap when max_tokens is set too)
--   max_tokens   token budget per batch counting padding: B * longest
--                source and B * longest target both stay within it
--   shuffle      shuffle examples and batch order each epoch (default true)
--   bucket       sort by length within chunks (default true): less padding
--   chunk_size   examples per sorted chunk (default 16384; with shuffle
--                false and bucket true the whole set is sorted, longest
--                first, which suits evaluation)
--   seed         (default 28, the reference's); epoch 1 is the first
--   pad_multiple round padded lengths up to a multiple (e.g. 8)
--   rank, world_size  data parallelism: every rank makes the same plan and
--                takes batches rank+1, rank+1+world_size, ... (0-based
--                rank); each epoch has floor(batches / world_size) steps so
--                the ranks stay in step
--   epoch, position   where to start (or state = a saved state); position
--                counts the steps of this loader taken in the epoch
--
-- The batches of an epoch are a pure function of (dataset, options, seed,
-- epoch): the plan is made by one thread in the engine, so thread counts
-- and restarts do not change it.
local engine = require("dqbart.data_engine")

local M = {}

local Loader = {}
Loader.__index = Loader

local DEFAULT_CHUNK = 16384

local function positive_int(name, v)
  if v == nil then return nil end
  if type(v) ~= "number" or v < 1 or v % 1 ~= 0 then
    error(("data loader: %s must be a positive integer, got %s"):format(name, tostring(v)), 3)
  end
  return v
end

local KNOWN = {
  batch_size = true, max_tokens = true, shuffle = true, bucket = true, chunk_size = true, seed = true,
  pad_multiple = true, epoch = true, position = true, state = true, rank = true, world_size = true,
}

function M.new(ds, opts)
  opts = opts or {}
  for k in pairs(opts) do
    if not KNOWN[k] then error(("data loader: unknown option '%s'"):format(tostring(k)), 2) end
  end
  local self = setmetatable({ ds = ds }, Loader)
  self.batch_size = positive_int("batch_size", opts.batch_size)
  self.max_tokens = positive_int("max_tokens", opts.max_tokens)
  if not self.batch_size and not self.max_tokens then
    error("data loader: give batch_size or max_tokens (or both)", 2)
  end
  self.shuffle = opts.shuffle ~= false
  self.bucket = opts.bucket ~= false
  self.chunk_size = positive_int("chunk_size", opts.chunk_size) or DEFAULT_CHUNK
  self.seed = opts.seed or 28
  if type(self.seed) ~= "number" or self.seed < 0 or self.seed % 1 ~= 0 then
    error(("data loader: seed must be a non-negative integer, got %s"):format(tostring(self.seed)), 2)
  end
  self.pad_multiple = positive_int("pad_multiple", opts.pad_multiple) or 1
  self.world_size = positive_int("world_size", opts.world_size) or 1
  self.rank = opts.rank or 0
  if type(self.rank) ~= "number" or self.rank < 0 or self.rank >= self.world_size or self.rank % 1 ~= 0 then
    error(("data loader: rank must be an integer in 0..%d, got %s"):format(self.world_size - 1, tostring(opts.rank)), 2)
  end
  -- The plan's identity: a saved state is only valid for the same one (any
  -- rank may resume from rank 0's state).
  self.fingerprint = engine.hash(table.concat({ ds.key or "", ds:size(), self.batch_size or 0,
    self.max_tokens or 0, tostring(self.shuffle), tostring(self.bucket), self.chunk_size, self.seed,
    self.world_size }, " "))
  self.epoch, self.position = 1, 0
  if opts.state then self:set_state(opts.state) end
  if opts.epoch then self.epoch = positive_int("epoch", opts.epoch) end
  if opts.position then self.position = opts.position end
  return self
end

-- The plan of the current epoch (made once per epoch).
function Loader:plan()
  if self.planned_epoch ~= self.epoch then
    if self.order then self.order:free(); self.starts:free() end
    local chunk = 0
    if self.bucket then chunk = self.shuffle and self.chunk_size or self.ds:size() end
    self.order, self.starts, self.count = engine.plan(self.ds.store.src_offsets,
      self.ds.has_target and self.ds.store.tgt_offsets or nil, {
        batch_size = self.batch_size, max_tokens = self.max_tokens, shuffle = self.shuffle,
        chunk_size = chunk, seed = self.seed, epoch = self.epoch,
      })
    self.planned_epoch = self.epoch
  end
  return self.order, self.starts, self.count
end

-- Steps of this loader in the current epoch (all batches with one rank).
function Loader:num_batches()
  local _, _, count = self:plan()
  return math.floor(count / self.world_size)
end

local Batch = {}
Batch.__index = Batch
M.Batch = Batch

local TENSORS = { "input_ids", "attention_mask", "decoder_input_ids", "decoder_attention_mask", "labels" }
M.TENSORS = TENSORS

-- Release the batch's tensors now (the GC would, later); tensors the
-- caller passed in as `outs` stay theirs.
function Batch:free()
  local outs = rawget(self, "outs") or {}
  for _, name in ipairs(TENSORS) do
    if self[name] and not rawequal(self[name], outs[name]) then self[name]:free() end
  end
end

-- A copy with every tensor on `device` ("cuda", "cuda:1", ...).
function Batch:to(device)
  local out = setmetatable({}, Batch)
  for k, v in pairs(self) do out[k] = v end
  out.outs = nil
  for _, name in ipairs(TENSORS) do
    if self[name] then out[name] = self[name]:to(device) end
  end
  return out
end

-- This loader's batch k (1-based) of the current epoch (the plan's batch
-- (k - 1) * world_size + rank + 1); the state does not move. outs:
-- preallocated tensors by name (fixed shapes; see dq_data_pack).
function Loader:batch(k, outs)
  local order, starts = self:plan()
  local steps = self:num_batches()
  if type(k) ~= "number" or k < 1 or k > steps or k % 1 ~= 0 then
    error(("data loader: batch %s is out of range (epoch %d has %d)"):format(tostring(k), self.epoch, steps), 2)
  end
  local planned = (k - 1) * self.world_size + self.rank
  local first, last = engine.i64_at(starts, planned), engine.i64_at(starts, planned + 1)
  local examples = order:narrow(1, first + 1, last - first)
  local ds = self.ds
  local b = engine.pack(ds.store, examples, {
    pad_id = ds.pad_id, decoder_start_id = ds.decoder_start_token_id, shift = ds.shift,
    pad_multiple = self.pad_multiple, with_target = ds.has_target,
  }, outs)
  -- Example indices (1-based) and the real (unpadded) token counts.
  local store, src_tokens, tgt_tokens = ds.store, 0, 0
  b.indices = {}
  for i, e in ipairs(examples:tolist()) do
    b.indices[i] = e + 1
    src_tokens = src_tokens + engine.i64_at(store.src_offsets, e + 1) - engine.i64_at(store.src_offsets, e)
    tgt_tokens = tgt_tokens + engine.i64_at(store.tgt_offsets, e + 1) - engine.i64_at(store.tgt_offsets, e)
  end
  examples:free()
  b.size, b.source_tokens, b.target_tokens = #b.indices, src_tokens, tgt_tokens
  b.outs = outs
  b.epoch, b.position = self.epoch, k
  return setmetatable(b, Batch)
end

-- The next batch of the current epoch, or nil when the epoch is over (the
-- state then moves to the start of the next epoch).
function Loader:next(outs)
  local count = self:num_batches()
  if self.position >= count then
    self.epoch, self.position = self.epoch + 1, 0
    return nil
  end
  local b = self:batch(self.position + 1, outs)
  self.position = self.position + 1
  return b
end

-- Iterate the remaining batches of the current epoch.
function Loader:batches(outs)
  return function() return self:next(outs) end
end

function Loader:state()
  return { epoch = self.epoch, position = self.position, examples = self.ds:size(), plan = self.fingerprint }
end

function Loader:set_state(s)
  if type(s) ~= "table" or type(s.epoch) ~= "number" or type(s.position) ~= "number" then
    error("data loader: a state is a table { epoch = N, position = K } from loader:state()", 2)
  end
  if s.examples and s.examples ~= self.ds:size() then
    error(("data loader: the state is for %d examples but the dataset has %d"):format(s.examples, self.ds:size()), 2)
  end
  if s.plan and s.plan ~= self.fingerprint then
    error("data loader: the state comes from a loader with other data or options (batch size, tokens, seed, " ..
      "shuffling); resuming with it would not repeat the same batches", 2)
  end
  self.epoch, self.position = s.epoch, s.position
  return self
end

function Loader:free()
  if self.order then self.order:free(); self.starts:free() end
  self.order, self.starts, self.planned_epoch = nil, nil, nil
end

return M
