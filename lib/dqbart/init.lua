-- dqbart: the `dq` namespace. `local dq = require("dqbart")`; the dqbart
-- launcher and its REPL preload it as the global `dq`.
local core = require("dqbart.ffi")
local tensor = require("dqbart.tensor")
local ops = require("dqbart.ops")
require("dqbart.format")
local ffi, C, check = core.ffi, core.C, core.check

local dq = {}

-- ---- library ----------------------------------------------------------------
function dq.version() return ffi.string(C.dq_version()) end
function dq.built_with_cuda() return C.dq_built_with_cuda() == 1 end
function dq.cuda_device_count() return C.dq_cuda_device_count() end
function dq.cuda_available() return C.dq_cuda_device_count() > 0 end

-- Wait for the device's queued work ("cpu", "cuda", "cuda:N").
function dq.sync(device)
  check(C.dq_sync(tensor.device_id(device or "cuda", 2)), 2)
end

-- free, total bytes of device (or host) memory, and bytes held by tensors.
function dq.memory_info(device)
  local id = tensor.device_id(device, 2)
  local free, total = ffi.new("int64_t[1]"), ffi.new("int64_t[1]")
  check(C.dq_memory_info(id, free, total), 2)
  return tonumber(free[0]), tonumber(total[0]), tonumber(C.dq_memory_allocated(id))
end

-- The most bytes tensors have held on the device since the start or the
-- last dq.reset_memory_peak(device).
function dq.memory_peak(device) return tonumber(C.dq_memory_peak(tensor.device_id(device, 2))) end
function dq.reset_memory_peak(device) C.dq_memory_reset_peak(tensor.device_id(device, 2)) end

function dq.set_num_threads(n) check(C.dq_set_num_threads(n), 2) end
function dq.get_num_threads() return C.dq_get_num_threads() end

-- ---- tensors -------------------------------------------------------------------
dq.empty, dq.zeros, dq.ones, dq.full = tensor.empty, tensor.zeros, tensor.ones, tensor.full
dq.arange, dq.rand, dq.randn = tensor.arange, tensor.rand, tensor.randn
dq.from_buffer, dq.is_tensor, dq.undefined = tensor.from_buffer, tensor.is_tensor, tensor.undefined
dq.tensor = tensor.from_table
dq.device_id, dq.device_name, dq.dtype_id = tensor.device_id, tensor.device_name, tensor.dtype_id
dq.rng = require("dqbart.rng")

-- ---- ops -------------------------------------------------------------------------
for name, fn in pairs(ops) do dq[name] = fn end
dq.data = require("dqbart.data")
dq.metrics = require("dqbart.metrics")
dq.safetensors = require("dqbart.safetensors")
dq.config = require("dqbart.config")
dq.quant = require("dqbart.quant_plan")
dq.loss = require("dqbart.loss")
dq.size = require("dqbart.size")
dq.tokenizer = require("dqbart.tokenizer")
dq.model = require("dqbart.model")
dq.select = require("dqbart.select")
dq.optim = require("dqbart.optim")
dq.schedule = require("dqbart.schedule")
dq.recipe = require("dqbart.recipe")
dq.generate = require("dqbart.generate")

return dq
