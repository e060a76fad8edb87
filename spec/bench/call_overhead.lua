-- The cost of one LuaJIT-to-engine call for a tiny op (a 1-element scale
-- into a preallocated out), and of a bare FFI call to the library, per call.
-- Run: build/dqbart spec/bench/call_overhead.lua [calls]
local dq = require("dqbart")
local C = require("dqbart.ffi").C
local bench = dofile(arg[0]:gsub("[^/]*$", "") .. "bench.lua")

local calls = tonumber(arg[1]) or 2000000
local x, out = dq.ones(1), dq.zeros(1)

local function per_call(fn)
  fn(1000)
  local best = math.huge
  for _ = 1, 5 do
    best = math.min(best, bench.timed(function() fn(calls) end) / calls)
  end
  return best
end

local raw = per_call(function(n) for _ = 1, n do C.dq_scale(out, x, 2) end end)
local api = per_call(function(n) for _ = 1, n do dq.scale(x, 2, out) end end)
local bare = per_call(function(n) for _ = 1, n do C.dq_get_num_threads() end end)
print(("tiny op, FFI call into the engine (C.dq_scale, 1 element): %6.0f ns"):format(raw * 1e9))
print(("tiny op through the Lua API (dq.scale(x, 2, out)):          %6.0f ns"):format(api * 1e9))
print(("bare FFI call (C.dq_get_num_threads):                        %6.0f ns"):format(bare * 1e9))
