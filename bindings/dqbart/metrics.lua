-- dqbart.metrics (dq.metrics): ROUGE and BLEU scored exactly as the reference
-- packages score them (engine/dqbart_metrics.h says what "exactly" covers).
--
--   local r = dq.metrics.rouge(preds, refs)            -- stemmed, like the paper
--   print(r.rougeLsum.f)                               -- mean F x 100
--   local r = dq.metrics.rouge(preds, refs, { stem = false, bootstrap = 1000,
--                                             per_example = true })
--   r.rouge1.low.f, r.rouge1.mid.f, r.rouge1.high.f    -- bootstrap interval
--   r.per_example.rouge2.f[i]                          -- pair i's F x 100
--
--   local b = dq.metrics.bleu(hyps, refs)              -- one reference stream
--   local b = dq.metrics.bleu(hyps, { refs_a, refs_b }) -- several streams
--   print(b.score, b.signature)
--
-- ROUGE numbers are rouge-score's fractions x 100 (p, r, f); BLEU numbers are
-- sacreBLEU's (already 0..100). Texts are Lua strings of UTF-8; a NUL byte
-- ends a text.
local core = require("dqbart.ffi")
local ffi, C, check = core.ffi, core.C, core.check

local M = {}

M.DEFAULT_ROUGE_TYPES = { "rouge1", "rouge2", "rougeL", "rougeLsum" }

local function fail(fn, msg, level)
  error(("dq.metrics.%s: %s"):format(fn, msg), (level or 1) + 1)
end

-- Reject option keys the function does not know, naming the valid ones.
local function check_options(fn, opts, valid)
  if opts == nil then return {} end
  if type(opts) ~= "table" then fail(fn, ("options must be a table, got %s"):format(type(opts)), 3) end
  for k in pairs(opts) do
    local ok = false
    for _, v in ipairs(valid) do if v == k then ok = true end end
    if not ok then
      fail(fn, ("unknown option '%s' (valid: %s)"):format(tostring(k), table.concat(valid, ", ")), 3)
    end
  end
  return opts
end

-- A const char *[n] over a list of strings. The Lua strings stay alive in
-- `list`, which the caller keeps referenced during the call.
local function cstrings(fn, what, list, n, allow_false)
  if type(list) ~= "table" then fail(fn, ("%s must be a list of strings, got %s"):format(what, type(list)), 3) end
  local arr = ffi.new("const char *[?]", math.max(n, 1))
  for i = 1, n do
    local s = list[i]
    if type(s) == "string" then
      arr[i - 1] = s
    elseif s == false and allow_false then
      arr[i - 1] = nil
    else
      fail(fn, ("%s[%d] is %s; expected a string%s"):format(what, i, type(s),
        allow_false and " (or false for no reference)" or ""), 3)
    end
  end
  return arr
end

-- Call an out/capacity/length engine function, growing the buffer once
-- when the first guess is too small.
local function string_result(call, guess)
  local len = ffi.new("int64_t[1]")
  local cap = guess
  for _ = 1, 2 do
    local buf = ffi.new("char[?]", cap)
    local status = call(buf, cap, len)
    if status == 0 then return ffi.string(buf, tonumber(len[0])) end
    if tonumber(len[0]) + 1 <= cap then check(status, 3) end
    cap = tonumber(len[0]) + 1
  end
  error("dq.metrics: result buffer kept growing", 3)
end

-- ---- ROUGE ---------------------------------------------------------------------------

-- "rouge1".."rouge9" -> N, "rougeL" -> DQ_ROUGE_L, "rougeLsum" -> DQ_ROUGE_LSUM
local function rouge_type_code(name)
  if name == "rougeL" then return C.DQ_ROUGE_L end
  if name == "rougeLsum" then return C.DQ_ROUGE_LSUM end
  local n = type(name) == "string" and tonumber(name:match("^rouge([1-9])$"))
  if n then return n end
  fail("rouge", ("unknown ROUGE type '%s' (expected rouge1 .. rouge9, rougeL or rougeLsum)"):format(tostring(name)), 4)
end

local ROUGE_OPTIONS = { "stem", "types", "per_example", "bootstrap", "confidence", "seed",
                        "sentence_sep", "split_sentences" }

-- Scores of preds[i] against refs[i]. opts:
--   stem = true            Porter stemmer (rouge-score's use_stemmer)
--   types = {...}          default rouge1, rouge2, rougeL, rougeLsum
--   sentence_sep = "<n>"   a marker read as a line break (rougeLsum sentences)
--   split_sentences = false  split plain text with the rule-based splitter
--                          (not punkt; see engine/sentences.c) for rougeLsum
--   bootstrap = nil        resamples for low/mid/high (true = 1000)
--   confidence = 0.95, seed = 0
--   per_example = false    also return every pair's scores
-- Returns { rouge1 = { p =, r =, f =, [low =, mid =, high = { p, r, f }] },
--           ..., count = n, types = {...}, [per_example = { rouge1 = { p = {}, r = {}, f = {} } }] }
-- with every number x 100; p, r and f are means over the pairs.
function M.rouge(preds, refs, opts)
  opts = check_options("rouge", opts, ROUGE_OPTIONS)
  if type(preds) ~= "table" or type(refs) ~= "table" then
    fail("rouge", "predictions and references must be lists of strings", 2)
  end
  local n = #preds
  if n ~= #refs then fail("rouge", ("%d predictions but %d references"):format(n, #refs), 2) end
  if n == 0 then fail("rouge", "no predictions to score", 2) end
  local names = opts.types or M.DEFAULT_ROUGE_TYPES
  local ntypes = #names
  if ntypes == 0 then fail("rouge", "types is empty", 2) end
  local codes = ffi.new("int32_t[?]", ntypes)
  for k, name in ipairs(names) do codes[k - 1] = rouge_type_code(name) end
  local options = ffi.new("dq_rouge_options")
  options.stem = opts.stem == false and 0 or 1
  options.split_sentences = opts.split_sentences and 1 or 0
  local sep = opts.sentence_sep
  if sep ~= nil and (type(sep) ~= "string" or sep == "") then
    fail("rouge", "sentence_sep must be a non-empty string", 2)
  end
  options.sentence_sep = sep
  local P = cstrings("rouge", "predictions", preds, n)
  local R = cstrings("rouge", "references", refs, n)
  local cols = ntypes * 3
  local scores = ffi.new("double[?]", n * cols)
  check(C.dq_rouge(n, P, R, ntypes, codes, options, scores), 2)

  local result = { count = n, types = names }
  local sums = {}
  for c = 0, cols - 1 do sums[c] = 0 end
  for i = 0, n - 1 do
    local row = i * cols
    for c = 0, cols - 1 do sums[c] = sums[c] + scores[row + c] end
  end
  local function prf(get) return { p = get(0), r = get(1), f = get(2) } end
  for k, name in ipairs(names) do
    local base = (k - 1) * 3
    result[name] = prf(function(j) return 100 * sums[base + j] / n end)
  end

  local samples = opts.bootstrap
  if samples == true then samples = 1000 end
  if samples then
    if type(samples) ~= "number" or samples < 1 or samples % 1 ~= 0 then
      fail("rouge", ("bootstrap must be true or a positive integer, got %s"):format(tostring(samples)), 2)
    end
    local low, mid, high = ffi.new("double[?]", cols), ffi.new("double[?]", cols), ffi.new("double[?]", cols)
    check(C.dq_bootstrap_mean(n, cols, scores, samples, opts.confidence or 0.95, opts.seed or 0, low, mid, high), 2)
    for k, name in ipairs(names) do
      local base = (k - 1) * 3
      result[name].low = prf(function(j) return 100 * low[base + j] end)
      result[name].mid = prf(function(j) return 100 * mid[base + j] end)
      result[name].high = prf(function(j) return 100 * high[base + j] end)
    end
    result.bootstrap = { samples = samples, confidence = opts.confidence or 0.95, seed = opts.seed or 0 }
  end

  if opts.per_example then
    local per = {}
    for k, name in ipairs(names) do
      local p, r, f = {}, {}, {}
      local base = (k - 1) * 3
      for i = 0, n - 1 do
        local at = i * cols + base
        p[i + 1], r[i + 1], f[i + 1] = 100 * scores[at], 100 * scores[at + 1], 100 * scores[at + 2]
      end
      per[name] = { p = p, r = r, f = f }
    end
    result.per_example = per
  end
  return result
end

-- rouge-score's tokens of a text (stemmed unless stem == false).
function M.rouge_tokens(text, stem)
  if type(text) ~= "string" then fail("rouge_tokens", "text must be a string", 2) end
  local joined = string_result(function(buf, cap, len)
    return C.dq_rouge_tokenize(text, stem == false and 0 or 1, buf, cap, len)
  end, #text + 2)
  local tokens = {}
  for t in joined:gmatch("%S+") do tokens[#tokens + 1] = t end
  return tokens
end

-- nltk's PorterStemmer().stem(word) for an ASCII letters-and-digits word.
function M.porter_stem(word)
  if type(word) ~= "string" then fail("porter_stem", "word must be a string", 2) end
  return string_result(function(buf, cap, len) return C.dq_porter_stem(word, buf, cap, len) end, #word + 1)
end

-- Sentences of plain English text by the rule-based splitter (not punkt).
function M.split_sentences(text)
  if type(text) ~= "string" then fail("split_sentences", "text must be a string", 2) end
  local cap = math.floor(#text / 2) + 1
  local bounds, count = ffi.new("int64_t[?]", 2 * cap), ffi.new("int64_t[1]")
  check(C.dq_split_sentences(text, bounds, cap, count), 2)
  local out = {}
  for k = 0, tonumber(count[0]) - 1 do
    out[k + 1] = text:sub(tonumber(bounds[2 * k]) + 1, tonumber(bounds[2 * k + 1]))
  end
  return out
end

-- ---- BLEU ----------------------------------------------------------------------------

local function bleu_table(s)
  local t = {
    score = s.score, bp = s.bp, ratio = s.ratio,
    sys_len = tonumber(s.sys_len), ref_len = tonumber(s.ref_len),
    precisions = {}, counts = {}, totals = {},
  }
  for n = 0, C.DQ_BLEU_MAX_ORDER - 1 do
    t.precisions[n + 1] = s.precisions[n]
    t.counts[n + 1] = tonumber(s.correct[n])
    t.totals[n + 1] = tonumber(s.total[n])
  end
  -- sacreBLEU's verbose part: "p1/p2/p3/p4 (BP = ... ratio = ... hyp_len = ... ref_len = ...)"
  local prec = {}
  for n = 1, #t.precisions do prec[n] = ("%.1f"):format(t.precisions[n]) end
  t.verbose = ("%s (BP = %.3f ratio = %.3f hyp_len = %d ref_len = %d)"):format(
    table.concat(prec, "/"), t.bp, t.ratio, t.sys_len, t.ref_len)
  return t
end

local BLEU_OPTIONS = { "per_example" }

-- Corpus BLEU of hyps against refs: a list of strings (one reference per
-- hypothesis) or a list of such lists (reference streams; `false` marks a
-- missing reference). opts.per_example adds per_example = { sentence BLEU
-- tables } (sacreBLEU's sentence_score with the same settings).
-- Returns { score, bp, ratio, precisions = {4}, counts, totals, sys_len,
-- ref_len, verbose, signature, nrefs, text = "BLEU|<signature> = ..." }.
function M.bleu(hyps, refs, opts)
  opts = check_options("bleu", opts, BLEU_OPTIONS)
  if type(hyps) ~= "table" or type(refs) ~= "table" then
    fail("bleu", "hypotheses and references must be lists", 2)
  end
  local n = #hyps
  if n == 0 then fail("bleu", "no hypotheses to score", 2) end
  local streams = type(refs[1]) == "table" and refs or { refs }
  local nrefs = #streams
  for k, stream in ipairs(streams) do
    if type(stream) ~= "table" or #stream ~= n then
      -- #stream undercounts a stream ending in false; count explicitly
      local len = 0
      if type(stream) == "table" then
        for i in pairs(stream) do if type(i) == "number" and i > len then len = i end end
      end
      if len ~= n then
        fail("bleu", ("%d hypotheses but reference stream %d has %d entries"):format(n, k, len), 2)
      end
    end
  end
  local H = cstrings("bleu", "hypotheses", hyps, n)
  local R = ffi.new("const char *[?]", n * nrefs)
  for k, stream in ipairs(streams) do
    local arr = cstrings("bleu", ("references[%d]"):format(k), stream, n, true)
    for i = 0, n - 1 do R[(k - 1) * n + i] = arr[i] end
  end
  local stats = opts.per_example and ffi.new("int64_t[?]", n * C.DQ_BLEU_STATS) or nil
  local corpus = ffi.new("dq_bleu_score")
  local sig_nrefs = ffi.new("int[1]")
  check(C.dq_bleu(n, H, nrefs, R, stats, corpus, sig_nrefs), 2)
  local result = bleu_table(corpus)
  local sig = ffi.new("char[160]")
  check(C.dq_bleu_signature(sig_nrefs[0], sig, 160), 2)
  result.signature = ffi.string(sig)
  result.nrefs = sig_nrefs[0] == -1 and "var" or tonumber(sig_nrefs[0])
  result.text = ("BLEU|%s = %.2f %s"):format(result.signature, result.score, result.verbose)
  if stats then
    local per = {}
    local one = ffi.new("dq_bleu_score")
    for i = 0, n - 1 do
      check(C.dq_bleu_from_stats(stats + i * C.DQ_BLEU_STATS, one), 2)
      per[i + 1] = bleu_table(one)
    end
    result.per_example = per
  end
  return result
end

-- sacreBLEU's 13a tokenization of one segment (tokens joined by spaces).
function M.bleu_tokenize(text)
  if type(text) ~= "string" then fail("bleu_tokenize", "text must be a string", 2) end
  return string_result(function(buf, cap, len) return C.dq_bleu_tokenize(text, buf, cap, len) end,
                       4 * #text + 16)
end

-- ---- files -------------------------------------------------------------------------------

-- The lines of a text file, one text per line: a final newline ends the
-- last line rather than starting an empty one, and a trailing "\r" (CRLF
-- files) is dropped. Returns nil, message when the file cannot be read.
function M.read_lines(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local data = f:read("*a")
  f:close()
  local out = {}
  if data == "" then return out end
  if data:sub(-1) ~= "\n" then data = data .. "\n" end
  for line in data:gmatch("([^\n]*)\n") do
    out[#out + 1] = line:gsub("\r$", "")
  end
  return out
end

-- ---- JSON for the CLI -------------------------------------------------------------------

-- Numbers as the shortest %.17g-or-shorter form that reads back equal
-- (Python's repr does the same), strings escaped, keys in `order` first and
-- then sorted.
local function json_number(x)
  if x ~= x or x == math.huge or x == -math.huge then return "null" end
  if x == math.floor(x) and math.abs(x) < 2 ^ 53 then return ("%d"):format(x) end
  for digits = 15, 17 do
    local s = ("%." .. digits .. "g"):format(x)
    if tonumber(s) == x then return s end
  end
  return ("%.17g"):format(x)
end

local function json_string(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    local named = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }
    return named[c] or ("\\u%04x"):format(c:byte())
  end) .. '"'
end

function M.to_json(value, order, indent)
  indent = indent or ""
  local t = type(value)
  if t == "number" then return json_number(value) end
  if t == "string" then return json_string(value) end
  if t == "boolean" then return tostring(value) end
  if value == nil then return "null" end
  if t ~= "table" then error("to_json: cannot encode a " .. t, 2) end
  local inner = indent .. "  "
  if #value > 0 or next(value) == nil then
    local parts = {}
    for i = 1, #value do parts[i] = M.to_json(value[i], order, inner) end
    return "[" .. table.concat(parts, ", ") .. "]"
  end
  local keys, seen = {}, {}
  for _, k in ipairs(order or {}) do
    if value[k] ~= nil then keys[#keys + 1] = k; seen[k] = true end
  end
  local rest = {}
  for k in pairs(value) do if not seen[k] then rest[#rest + 1] = tostring(k) end end
  table.sort(rest)
  for _, k in ipairs(rest) do keys[#keys + 1] = k end
  -- a small object of scalars ({"p": .., "r": .., "f": ..}) stays on one line
  local flat = #keys <= 6
  for _, k in ipairs(keys) do if type(value[k]) == "table" then flat = false end end
  local parts = {}
  for _, k in ipairs(keys) do
    parts[#parts + 1] = (flat and "" or inner) .. json_string(k) .. ": " .. M.to_json(value[k], order, inner)
  end
  if flat then return "{" .. table.concat(parts, ", ") .. "}" end
  return "{\n" .. table.concat(parts, ",\n") .. "\n" .. indent .. "}"
end

return M
