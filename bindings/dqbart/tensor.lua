-- dqbart.tensor: dq_tensor as a LuaJIT metatype.
--
-- Lua conventions (as in Torch7): dims and indices are 1-based, negative
-- dims count from the end (-1 is the last). Shapes are Lua tables {2, 3} or
-- plain numbers: dq.zeros(2, 3) == dq.zeros({2, 3}).
--
-- A tensor's struct is Lua-owned (ffi.new); its storage is reference
-- counted by the engine. t:free() drops the reference at once (GPU memory
-- must not wait for the garbage collector); the finalizer is a backstop.
-- Struct fields (shape, ndim, numel, dtype, device, data) read directly.
local core = require("dqbart.ffi")
local ffi, C, check = core.ffi, core.C, core.check

local M = {}
local methods = {}
M.methods = methods

-- The metatable's contents grow as other binding modules load (ops add
-- operators, format adds __tostring); the table itself is fixed here.
local metatable = {
  __index = methods,
  __gc = function(t) C.dq_tensor_release(t) end,
}
M.metatable = metatable
local tensor_ct = ffi.metatype("dq_tensor", metatable)
local shape_ct = ffi.typeof("int64_t[8]")
local perm_ct = ffi.typeof("int[8]")
local MAX_DIMS = 8

-- ---- dtypes and devices -------------------------------------------------------

local dtype_ids = {}
for id = 0, C.DQ_NUM_DTYPES - 1 do dtype_ids[ffi.string(C.dq_dtype_name(id))] = id end
M.dtype_names = {}
for name, id in pairs(dtype_ids) do M.dtype_names[id] = name end

function M.dtype_id(d, level)
  if type(d) == "number" then
    if M.dtype_names[d] then return d end
  elseif type(d) == "string" then
    local id = C.dq_dtype_from_name(d)
    if id >= 0 then return id end
  end
  error(("unknown dtype %s (expected f32, bf16, f16, i8, i32 or i64)"):format(tostring(d)), (level or 1) + 1)
end

-- "cpu" -> -1, "cuda" -> 0, "cuda:1" -> 1; numbers pass through.
function M.device_id(d, level)
  if d == nil or d == "cpu" then return -1 end
  if type(d) == "number" and d >= -1 and d % 1 == 0 then return d end
  if d == "cuda" then return 0 end
  if type(d) == "string" then
    local n = d:match("^cuda:(%d+)$")
    if n then return tonumber(n) end
  end
  error(("unknown device %s (expected 'cpu', 'cuda' or 'cuda:N')"):format(tostring(d)), (level or 1) + 1)
end

function M.device_name(id)
  return id < 0 and "cpu" or ("cuda:" .. id)
end

-- ---- construction ---------------------------------------------------------------

function M.is_tensor(x)
  return type(x) == "cdata" and ffi.istype(tensor_ct, x)
end

-- An undefined tensor: ops allocate it on first use.
function M.undefined()
  return tensor_ct()
end

-- Split (shape..., opts) or ({shape}, opts) arguments.
local function shape_args(...)
  local first = ...
  if type(first) == "table" then return first, select(2, ...) end
  local shape, n = {}, select("#", ...)
  for i = 1, n do
    local v = select(i, ...)
    if type(v) == "number" then shape[#shape + 1] = v else return shape, v end
  end
  return shape
end
M.shape_args = shape_args

local function to_shape(shape, level)
  if #shape > MAX_DIMS then
    error(("a shape has at most %d dims, got %d"):format(MAX_DIMS, #shape), (level or 1) + 1)
  end
  local s = shape_ct()
  for i = 1, #shape do
    local v = shape[i]
    if type(v) ~= "number" or v % 1 ~= 0 then
      error(("shape entry %d is %s; expected an integer"):format(i, tostring(v)), (level or 1) + 1)
    end
    s[i - 1] = v
  end
  return s
end
M.to_shape = to_shape

function M.empty(...)
  local shape, opts = shape_args(...)
  opts = opts or {}
  local t = tensor_ct()
  check(C.dq_tensor_empty(t, #shape, to_shape(shape, 2), M.dtype_id(opts.dtype or "f32", 2),
    M.device_id(opts.device, 2)), 2)
  return t
end

function M.full(shape, value, opts)
  local t = M.empty(shape, opts)
  check(C.dq_fill(t, value), 2)
  return t
end

function M.zeros(...)
  local shape, opts = shape_args(...)
  return M.full(shape, 0, opts)
end

function M.ones(...)
  local shape, opts = shape_args(...)
  return M.full(shape, 1, opts)
end

-- arange(n) = 0..n-1; arange(start, stop[, step]) stops before stop.
function M.arange(a, b, c, opts)
  if type(b) == "table" then opts, b = b, nil end
  if type(c) == "table" then opts, c = c, nil end
  local start, stop, step = b and a or 0, b or a, c or 1
  if step == 0 then error("arange: step must not be 0", 2) end
  local n = math.max(0, math.ceil((stop - start) / step))
  opts = opts or {}
  local t = M.empty({ n }, { dtype = opts.dtype or "i64", device = opts.device })
  check(C.dq_arange(t, start, step), 2)
  return t
end

-- Random tensors need an explicit seed; offset defaults to 0. A generator
-- that advances the offset lives in dq.rng (lib).
local function random(fn, ...)
  local shape, opts = shape_args(...)
  opts = opts or {}
  if opts.seed == nil then error("random tensors need opts.seed (and optionally opts.offset)", 3) end
  local t = M.empty(shape, opts)
  check(fn(t, opts.seed, opts.offset or 0), 3)
  return t
end

function M.rand(...) return random(C.dq_rand, ...) end
function M.randn(...) return random(C.dq_randn, ...) end

-- Nested Lua tables -> tensor. dtype defaults to f32 (i64 with opts.dtype).
function M.from_table(data, opts)
  opts = opts or {}
  if type(data) ~= "table" then error("dq.tensor: expected a (nested) table of numbers", 2) end
  local shape, node = {}, data
  while type(node) == "table" do
    shape[#shape + 1] = #node
    node = node[1]
  end
  local flat = {}
  local function walk(t, depth)
    if depth > #shape then
      if type(t) ~= "number" then error(("dq.tensor: expected a number, got %s"):format(type(t)), 4) end
      flat[#flat + 1] = t
      return
    end
    if type(t) ~= "table" or #t ~= shape[depth] then
      error(("dq.tensor: ragged nested table (dim %d should have %d entries)"):format(depth, shape[depth]), 4)
    end
    for i = 1, #t do walk(t[i], depth + 1) end
  end
  walk(data, 1)
  local dtype = M.dtype_id(opts.dtype or "f32", 2)
  local host_dtype = (dtype == C.DQ_F32 or dtype == C.DQ_BF16 or dtype == C.DQ_F16) and "f32" or "i64"
  local host = M.empty(shape, { dtype = host_dtype })
  local ptr = ffi.cast(host_dtype == "f32" and "float*" or "int64_t*", host.data)
  for i = 1, #flat do ptr[i - 1] = flat[i] end
  if dtype == host.dtype and M.device_id(opts.device) == -1 then return host end
  local t = M.empty(shape, { dtype = dtype, device = opts.device })
  check(C.dq_copy(t, host), 2)
  host:free()
  return t
end

-- Raw host memory (bytes of the given dtype) -> a new tensor.
function M.from_buffer(ptr, shape, opts)
  local t = M.empty(shape, opts)
  check(C.dq_copy_from_host(t, ptr, t.numel * C.dq_dtype_size(t.dtype)), 2)
  return t
end

-- ---- properties -------------------------------------------------------------------

function methods:defined() return C.dq_tensor_defined(self) == 1 end
function methods:dim() return self.ndim end
function methods:nelement() return tonumber(self.numel) end
function methods:type() return M.dtype_names[self.dtype] end
function methods:device_name() return M.device_name(self.device) end
function methods:is_cuda() return self.device >= 0 end

-- Resolve a 1-based or negative dim to a 0-based C dim.
local function c_dim(t, d, level)
  local n = t.ndim
  if type(d) ~= "number" or d % 1 ~= 0 or d == 0 or d > n or d < -n then
    error(("dim %s is out of range for a %d-d tensor (1..%d or -%d..-1)"):format(tostring(d), n, n, n), (level or 1) + 1)
  end
  return d > 0 and d - 1 or n + d
end
M.c_dim = c_dim

-- size() -> {2, 3}; size(d) -> that dim's size.
function methods:size(d)
  if d then return tonumber(self.shape[c_dim(self, d, 2)]) end
  local s = {}
  for i = 0, self.ndim - 1 do s[i + 1] = tonumber(self.shape[i]) end
  return s
end

function methods:shape_string()
  return "[" .. table.concat(self:size(), ", ") .. "]"
end

-- ---- lifetime -----------------------------------------------------------------------

function methods:free() C.dq_tensor_release(self) end

-- ---- views and copies ---------------------------------------------------------------

function methods:view(offset, ...)
  local shape = shape_args(...)
  local out = tensor_ct()
  check(C.dq_view(out, self, offset, #shape, to_shape(shape, 2)), 2)
  return out
end

function methods:reshape(...)
  local shape = shape_args(...)
  local out = tensor_ct()
  check(C.dq_reshape(out, self, #shape, to_shape(shape, 2)), 2)
  return out
end

-- narrow(dim, first, length): 1-based first index, as a view.
function methods:narrow(dim, first, length)
  local out = tensor_ct()
  check(C.dq_narrow(out, self, c_dim(self, dim, 2), first - 1, length), 2)
  return out
end

function methods:narrow_copy(dim, first, length)
  local out = tensor_ct()
  check(C.dq_narrow_copy(out, self, c_dim(self, dim, 2), first - 1, length), 2)
  return out
end

function methods:select(dim, index)
  local out = tensor_ct()
  check(C.dq_select(out, self, c_dim(self, dim, 2), index - 1), 2)
  return out
end

function methods:permute(...)
  local order = shape_args(...)
  if #order ~= self.ndim then
    error(("permute: %d dims given for a %d-d tensor"):format(#order, self.ndim), 2)
  end
  local perm = perm_ct()
  for i = 1, #order do perm[i - 1] = c_dim(self, order[i], 2) end
  local out = tensor_ct()
  check(C.dq_permute(out, self, perm), 2)
  return out
end

function methods:transpose(d0, d1)
  local out = tensor_ct()
  check(C.dq_transpose(out, self, c_dim(self, d0 or -2, 2), c_dim(self, d1 or -1, 2)), 2)
  return out
end
methods.t = methods.transpose

-- A new tensor with the same values, optionally as another dtype/device.
function methods:to(dtype_or_device, device)
  local dtype, dev = self.dtype, self.device
  for _, v in ipairs({ dtype_or_device, device }) do
    if type(v) == "string" and (v == "cpu" or v:match("^cuda")) then dev = M.device_id(v, 2)
    elseif v ~= nil then dtype = M.dtype_id(v, 2) end
  end
  local out = tensor_ct()
  check(C.dq_tensor_empty(out, self.ndim, self.shape, dtype, dev), 2)
  check(C.dq_copy(out, self), 2)
  return out
end

function methods:clone() return self:to(self.dtype) end
function methods:float() return self:to("f32") end
function methods:bf16() return self:to("bf16") end
function methods:half() return self:to("f16") end
function methods:long() return self:to("i64") end
function methods:int() return self:to("i32") end
function methods:cpu() return self:to("cpu") end
function methods:cuda(n) return self:to(n and ("cuda:" .. n) or "cuda") end

-- In place: copy src's values (any dtype/device, equal numel) into self.
function methods:copy_(src)
  check(C.dq_copy(self, src), 2)
  return self
end

function methods:fill_(value)
  check(C.dq_fill(self, value), 2)
  return self
end

function methods:zero_() return self:fill_(0) end

-- ---- values to Lua --------------------------------------------------------------------

-- A CPU f32/i64 copy's pointer and the copy (kept alive by the caller).
local function host_values(t)
  local float = t.dtype == C.DQ_F32 or t.dtype == C.DQ_BF16 or t.dtype == C.DQ_F16
  local host = tensor_ct()
  check(C.dq_tensor_empty(host, t.ndim, t.shape, float and C.DQ_F32 or C.DQ_I64, -1), 3)
  check(C.dq_copy(host, t), 3)
  return ffi.cast(float and "float*" or "int64_t*", host.data), host, float
end
M.host_values = host_values

-- Flat list of numbers (row-major).
function methods:tolist()
  local ptr, host = host_values(self)
  local out = {}
  for i = 0, tonumber(self.numel) - 1 do out[i + 1] = tonumber(ptr[i]) end
  host:free()
  return out
end

-- Nested tables following the shape (a number for a 0-d tensor).
function methods:totable()
  local flat = self:tolist()
  if self.ndim == 0 then return flat[1] end
  local shape, pos = self:size(), 0
  local function build(d)
    local t = {}
    for i = 1, shape[d] do
      if d == #shape then
        pos = pos + 1
        t[i] = flat[pos]
      else
        t[i] = build(d + 1)
      end
    end
    return t
  end
  return build(1)
end

-- The value of a one-element tensor, or of element i (1-based, flat).
function methods:item(i)
  if not i and self.numel ~= 1 then
    error(("item: the tensor has %d elements; give a flat index"):format(tonumber(self.numel)), 2)
  end
  local v = ffi.new("double[1]")
  check(C.dq_get_item(self, (i or 1) - 1, v), 2)
  return v[0]
end

-- Copy the raw bytes into host memory at ptr.
function methods:to_buffer(ptr)
  check(C.dq_copy_to_host(self, ptr, self.numel * C.dq_dtype_size(self.dtype)), 2)
end

M.tensor_ct = tensor_ct
return M
