-- bench: what the benchmarks in spec/bench/ share. A benchmark loads it by
-- its own path, since the launcher runs it as a plain script:
--
--   local bench = dofile(arg[0]:gsub("[^/]*$", "") .. "bench.lua")
--
-- Loading it also puts spec/support/ on package.path, so benchmarks can
-- require the specs' helpers ("files", ...).
local dq = require("dqbart")

local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
package.path = here .. "/../support/?.lua;" .. package.path

local M = {}

-- Seconds on the monotonic clock (os.time has 1 s resolution, os.clock
-- counts CPU time of every thread). The library's clock: a second FFI
-- declaration of clock_gettime with another struct type would be ignored
-- by LuaJIT, and whichever of the two modules loaded second would fail.
M.wall = require("dqbart.progress").now

-- Options "--name value" (numbers converted) over defaults; names in
-- `flags` take no value and become true.
function M.options(argv, defaults, flags)
  local opts = {}
  for k, v in pairs(defaults) do opts[k] = v end
  local i = 1
  while i <= #argv do
    local k = argv[i]:match("^%-%-(.+)$")
    if not k then error("unexpected argument " .. argv[i]) end
    if flags and flags[k] then
      opts[k] = true
    else
      if argv[i + 1] == nil then error("--" .. k .. " needs a value") end
      i = i + 1
      opts[k] = tonumber(argv[i]) or argv[i]
    end
    i = i + 1
  end
  return opts
end

-- config.json tables of BART shapes (random-weight benchmarks).
local function bart(d, layers, heads, ffn, vocab)
  return { model_type = "bart", vocab_size = vocab or 50265, d_model = d, encoder_layers = layers,
    decoder_layers = layers, encoder_attention_heads = heads, decoder_attention_heads = heads,
    encoder_ffn_dim = ffn, decoder_ffn_dim = ffn, max_position_embeddings = 1024 }
end
M.BART_CONFIGS = {
  base = bart(768, 6, 12, 3072),
  large = bart(1024, 12, 16, 4096),
  tiny = bart(64, 6, 4, 128, 1000),
}

-- Seconds one call of fn takes.
function M.timed(fn)
  local t0 = M.wall()
  fn()
  return M.wall() - t0
end

-- The median of a list of numbers (the lower one of the middle two); sorts
-- the list in place.
function M.median(list)
  table.sort(list)
  return list[math.floor((#list + 1) / 2)]
end

-- Exits (status 1) with a message naming the benchmark unless a CUDA
-- device is present.
function M.need_cuda(name)
  if dq.cuda_device_count() == 0 then
    io.stderr:write(("%s: no CUDA device (built with CUDA: %s)\n"):format(name,
      dq.built_with_cuda() and "yes" or "no"))
    os.exit(1)
  end
end

-- Seconds per step on the GPU: `warmup` steps (plan caches, clocks), then
-- the median of 5 timings of `reps` back-to-back steps each, timed between
-- two syncs (so launch overhead overlaps the GPU work, as in training).
function M.gpu_seconds_per_step(step, reps, warmup)
  for _ = 1, warmup do step() end
  dq.sync()
  local times = {}
  for r = 1, 5 do
    local t0 = M.wall()
    for _ = 1, reps do step() end
    dq.sync()
    times[r] = (M.wall() - t0) / reps
  end
  return M.median(times)
end

return M
