-- dqbart.safetensors: safetensors files and Hugging Face checkpoints
-- (engine/dqbart_io.h).
--
--   local f = dq.safetensors.open(path)   -- a .safetensors file, an index
--                                          -- .json, or a checkpoint directory
--   f:names()            -> sorted list of tensor names
--   f:contains(name)     -> boolean
--   f:info(name)         -> { dtype = "bf16" (nil when dqbart cannot load it),
--                             file_dtype = "BF16", shape = {..}, offset, bytes, file }
--   f:tensor(name[, out]) -> a CPU tensor viewing the mapped file (zero-copy);
--                            with `out`, the values are copied into it instead
--                            (converting dtype, moving to its device)
--   f:tensors()          -> { name = tensor, ... } for every tensor
--   f:metadata()         -> { key = value } (__metadata__)
--   f:close()            -> the mapping goes once its tensors are freed too
--
--   dq.safetensors.save(path, tensors[, metadata])
--   dq.safetensors.save_checkpoint(dir, tensors[, metadata][, { max_shard_size = "50GB" }])
--     the Hugging Face layout (model.safetensors, or shards plus
--     model.safetensors.index.json); metadata defaults to { format = "pt" }
--     and max_shard_size to "50GB", as transformers 5's save_pretrained
--
-- `tensors` is a map { name = tensor } or a list of { name, tensor } pairs
-- (the order sharding fills shards in; a map is taken in name order).
-- BOOL tensors load as i8, U8 as i32 (see dqbart_io.h).
local core = require("dqbart.ffi")
local tensor = require("dqbart.tensor")
local ffi, C, check = core.ffi, core.C, core.check

local M = {}

local File = {}
File.__index = File

local handle_box = ffi.typeof("dq_safetensors*[1]")
local entry_ct = ffi.typeof("dq_safetensors_entry")

function M.open(path)
  if type(path) ~= "string" then
    error("safetensors.open: expected a path (file, index .json or checkpoint directory), got " .. type(path), 2)
  end
  local box = handle_box()
  check(C.dq_safetensors_open(box, path), 2)
  return setmetatable({ handle = ffi.gc(box[0], C.dq_safetensors_close), path = path }, File)
end

local function live(self, level)
  if not self.handle then error(("safetensors: %s is closed"):format(self.path), level + 1) end
  return self.handle
end

function File:names()
  local h = live(self, 2)
  local names = {}
  for i = 0, tonumber(C.dq_safetensors_count(h)) - 1 do names[i + 1] = ffi.string(C.dq_safetensors_name(h, i)) end
  return names
end

function File:contains(name)
  return C.dq_safetensors_contains(live(self, 2), name) == 1
end

function File:info(name)
  local e = entry_ct()
  check(C.dq_safetensors_info(live(self, 2), name, e), 2)
  local shape = {}
  for i = 0, e.ndim - 1 do shape[i + 1] = tonumber(e.shape[i]) end
  return {
    dtype = e.dtype >= 0 and tensor.dtype_names[e.dtype] or nil,
    file_dtype = ffi.string(e.file_dtype),
    shape = shape,
    offset = tonumber(e.data_offset),
    bytes = tonumber(e.bytes),
    file = ffi.string(e.path),
  }
end

function File:tensor(name, out)
  local t = out or tensor.undefined()
  check(C.dq_safetensors_tensor(live(self, 2), name, t), 2)
  return t
end

function File:tensors()
  local all = {}
  for _, name in ipairs(self:names()) do all[name] = self:tensor(name) end
  return all
end

function File:metadata()
  local h = live(self, 2)
  local meta = {}
  for i = 0, tonumber(C.dq_safetensors_metadata_count(h)) - 1 do
    meta[ffi.string(C.dq_safetensors_metadata_key(h, i))] = ffi.string(C.dq_safetensors_metadata_value(h, i))
  end
  return meta
end

function File:file_count()
  return tonumber(C.dq_safetensors_file_count(live(self, 2)))
end

function File:close()
  if self.handle then
    local h = self.handle
    self.handle = nil
    ffi.gc(h, nil)
    C.dq_safetensors_close(h)
  end
end

function File:__tostring()
  if not self.handle then return ("safetensors(%s, closed)"):format(self.path) end
  return ("safetensors(%s, %d tensors)"):format(self.path, tonumber(C.dq_safetensors_count(self.handle)))
end

-- ---- writing -----------------------------------------------------------------------

-- (name, tensor) pairs from a map (name order) or a list of pairs.
local function pairs_of(tensors, fname)
  if type(tensors) ~= "table" then error(fname .. ": tensors must be a table", 3) end
  local list = {}
  if #tensors > 0 then
    for i, p in ipairs(tensors) do
      if type(p) ~= "table" or type(p[1]) ~= "string" then
        error(("%s: entry %d of the tensor list must be { name, tensor }"):format(fname, i), 3)
      end
      list[i] = { p[1], p[2] }
    end
  else
    for name, t in pairs(tensors) do
      if type(name) ~= "string" then error(fname .. ": tensor names must be strings", 3) end
      list[#list + 1] = { name, t }
    end
    table.sort(list, function(a, b) return a[1] < b[1] end)
  end
  for _, p in ipairs(list) do
    if not tensor.is_tensor(p[2]) then
      error(("%s: %q is %s, not a tensor"):format(fname, p[1], type(p[2])), 3)
    end
  end
  return list
end

-- C arrays for the call, plus the Lua values they point into (kept alive
-- by the returned table until the call returns).
local function c_arguments(list, metadata, fname)
  local n = #list
  local names = ffi.new("const char*[?]", math.max(n, 1))
  local tensors = ffi.new("const dq_tensor*[?]", math.max(n, 1))
  for i, p in ipairs(list) do
    names[i - 1] = p[1]
    tensors[i - 1] = p[2]
  end
  local keys, values, m = {}, {}, 0
  if metadata ~= nil then
    if type(metadata) ~= "table" then error(fname .. ": metadata must be a table of strings", 3) end
    for k, v in pairs(metadata) do
      if type(k) ~= "string" or type(v) ~= "string" then
        error(("%s: metadata entry %s = %s: keys and values must be strings"):format(fname, tostring(k), tostring(v)), 3)
      end
      m = m + 1
      keys[m], values[m] = k, v
    end
  end
  local ckeys = ffi.new("const char*[?]", math.max(m, 1))
  local cvalues = ffi.new("const char*[?]", math.max(m, 1))
  for i = 1, m do
    ckeys[i - 1], cvalues[i - 1] = keys[i], values[i]
  end
  return { n = n, names = names, tensors = tensors, m = m, keys = ckeys, values = cvalues, anchor = { list, keys, values } }
end

function M.save(path, tensors, metadata)
  if type(path) ~= "string" then error("safetensors.save: path must be a string", 2) end
  local a = c_arguments(pairs_of(tensors, "safetensors.save"), metadata, "safetensors.save")
  check(C.dq_safetensors_save(path, a.n, a.names, a.tensors, a.m, a.keys, a.values), 2)
end

-- "5GB" (10^9), "500MiB" (2^20), or a number of bytes.
local units = { B = 1, KB = 1e3, MB = 1e6, GB = 1e9, TB = 1e12, KIB = 2 ^ 10, MIB = 2 ^ 20, GIB = 2 ^ 30, TIB = 2 ^ 40 }
function M.parse_size(size)
  if type(size) == "number" then return size end
  local num, unit = tostring(size):match("^%s*([%d%.]+)%s*(%a*)%s*$")
  local scale = unit and units[(unit == "" and "B" or unit):upper()]
  if not num or not tonumber(num) or not scale then
    error(("max_shard_size %q is not a size (examples: 5GB, 500MB, 2GiB, 1000000)"):format(tostring(size)), 3)
  end
  return math.floor(tonumber(num) * scale)
end

function M.save_checkpoint(dir, tensors, metadata, opts)
  if type(dir) ~= "string" then error("safetensors.save_checkpoint: dir must be a string", 2) end
  opts = opts or {}
  local max = M.parse_size(opts.max_shard_size or "50GB")
  if metadata == nil then metadata = { format = "pt" } end
  local a = c_arguments(pairs_of(tensors, "safetensors.save_checkpoint"), metadata, "safetensors.save_checkpoint")
  check(C.dq_safetensors_save_checkpoint(dir, a.n, a.names, a.tensors, a.m, a.keys, a.values, max), 2)
end

return M
