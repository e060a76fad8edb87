-- dqbart.trainer_batch: batches on the training device without an
-- allocation per step. Each slot (one per micro-batch of an update) keeps
-- one device buffer per tensor, grown when a larger batch comes and viewed
-- at each batch's shape; on the CPU the loader's tensors are used as they
-- are.
--
--   local dev = trainer_batch.new("cuda")
--   local b = dev:put(cpu_batch, slot)   -- a table with the five tensors on the device
--   dev:free()
local loader = require("dqbart.data.loader")
local tensor = require("dqbart.tensor")

local M = {}

local Device = {}
Device.__index = Device

function M.new(device)
  return setmetatable({ device = device, cpu = tensor.device_id(device) < 0, slots = {} }, Device)
end

-- The batch as the model reads it: on the CPU the batch itself, on a GPU a
-- table of views into the slot's buffers (valid until the slot's next put).
function Device:put(b, slot)
  if self.cpu then return b end
  slot = slot or 1
  local s = self.slots[slot]
  if not s then
    s = { buffers = {}, views = {} }
    self.slots[slot] = s
  end
  local out = s.views
  for _, name in ipairs(loader.TENSORS) do
    local t = b[name]
    if t then
      local n = tonumber(t.numel)
      local buf = s.buffers[name]
      if not buf or tonumber(buf.numel) < n or buf.dtype ~= t.dtype then
        if buf then buf:free() end
        buf = tensor.empty({ math.max(n, 1) }, { dtype = tensor.dtype_names[t.dtype], device = self.device })
        s.buffers[name] = buf
      end
      local view = buf:view(0, t:size())
      view:copy_(t)
      out[name] = view
    else
      out[name] = nil
    end
  end
  out.size, out.source_tokens, out.target_tokens = b.size, b.source_tokens, b.target_tokens
  return out
end

function Device:free()
  for _, s in pairs(self.slots) do
    for _, buf in pairs(s.buffers) do buf:free() end
  end
  self.slots = {}
end

return M
