-- dqbart.rng: a counter-based random stream. The engine's random ops are
-- pure functions of (seed, offset); a stream hands out fresh offsets so
-- successive draws never overlap, and its state is two numbers, which makes
-- a resumed run draw exactly what the original would have.
--
--   local gen = dq.rng(28)
--   local w = gen:randn({4, 4})                      -- advances the offset
--   local seed, offset = gen:take(x:nelement())      -- for dq.dropout(x, p, {seed =, offset =})
--   local state = gen:state(); ...; gen:set_state(state)
local tensor = require("dqbart.tensor")
local C = require("dqbart.ffi").C

local Stream = {}
Stream.__index = Stream

local function new(seed)
  assert(type(seed) == "number" and seed >= 0 and seed % 1 == 0, "dq.rng: the seed must be a non-negative integer")
  return setmetatable({ seed = seed, offset = 0 }, Stream)
end

-- Reserve counters for `numel` draws: returns seed, offset for the caller.
function Stream:take(numel)
  local offset = self.offset
  self.offset = offset + tonumber(C.dq_rng_span(numel))
  return self.seed, offset
end

local function draw(self, fn, ...)
  local shape, opts = tensor.shape_args(...)
  opts = opts or {}
  local numel = 1
  for _, d in ipairs(shape) do numel = numel * d end
  local seed, offset = self:take(numel)
  return fn(shape, { seed = seed, offset = offset, dtype = opts.dtype, device = opts.device })
end

function Stream:rand(...) return draw(self, tensor.rand, ...) end
function Stream:randn(...) return draw(self, tensor.randn, ...) end

function Stream:state() return { seed = self.seed, offset = self.offset } end

function Stream:set_state(s)
  self.seed, self.offset = s.seed, s.offset
  return self
end

return new
