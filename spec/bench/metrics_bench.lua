-- Speed of ROUGE and BLEU on CNN/DailyMail-sized texts (about 60 tokens in
-- 3-4 sentences per side), one core:
--   build/dqbart spec/bench/metrics_bench.lua [pairs]
local dq = require("dqbart")
local n = tonumber(arg and arg[1]) or 10000

-- A vocabulary with a Zipf-like skew so that pairs share words.
local words = {}
local fx = dofile("spec/fixtures/metrics/rouge_cases.lua")
for _, c in ipairs(fx.cases) do
  for w in c.ref:gmatch("[%a']+") do words[#words + 1] = w end
end
local seed = 12345
local function rand(k) -- LCG: the same texts on every run
  seed = (seed * 1103515245 + 12345) % 2147483648
  return seed % k + 1
end
local function sentence(len)
  local t = {}
  for i = 1, len do t[i] = words[rand(rand(#words))] end
  return table.concat(t, " ") .. "."
end
local function summary()
  local s = {}
  for i = 1, 3 + rand(2) - 1 do s[i] = sentence(14 + rand(8)) end
  return table.concat(s, "\n")
end
local preds, refs = {}, {}
for i = 1, n do preds[i], refs[i] = summary(), summary() end

local function time(label, fn)
  fn() -- warm up
  local t0 = os.clock()
  local reps = 3
  for _ = 1, reps do fn() end
  print(("%-48s %8.1f ms"):format(label, (os.clock() - t0) / reps * 1000))
end

print(("%d pairs, %d bytes of text"):format(n, #table.concat(preds) + #table.concat(refs)))
time("rouge 1/2/L/Lsum, stemmed", function() dq.metrics.rouge(preds, refs) end)
time("rouge 1/2/L/Lsum, no stemming", function() dq.metrics.rouge(preds, refs, { stem = false }) end)
time("rouge 1/2/L/Lsum, stemmed, bootstrap 1000", function() dq.metrics.rouge(preds, refs, { bootstrap = 1000 }) end)
time("rougeLsum only", function() dq.metrics.rouge(preds, refs, { types = { "rougeLsum" } }) end)
time("bleu (13a, one reference)", function() dq.metrics.bleu(preds, refs) end)
