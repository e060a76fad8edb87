-- dq.data: reading JSON Lines / TSV, truncation, decoder inputs for BART
-- and mBART, padding, batching by count and by tokens, determinism,
-- resuming, and the token cache. A tiny whitespace tokenizer stands in for
-- the real one (same API); spec/data_tokenizer_spec.lua covers the real one.
local dq = require("dqbart")
local data = dq.data
local files = require("files")
local error_of = require("expect_error").message

-- ---- helpers -----------------------------------------------------------------

-- A whitespace tokenizer over a fixed vocabulary with BART's special ids
-- (<s> 0, <pad> 1, </s> 2, <unk> 3) and the dq.tokenizer API. With
-- `lang` it follows mBART's template instead: `X </s> lang`.
local WORDS = {}
for w in ("a b c d e f g h i j k l m n o p q r s t u v w x y z one two three four five six seven eight nine ten"
  .. " the cat sat on mat dog ran far hello world 2024"):gmatch("%S+") do WORDS[#WORDS + 1] = w end

local function fake_tokenizer(lang)
  local vocab = { ["<s>"] = 0, ["<pad>"] = 1, ["</s>"] = 2, ["<unk>"] = 3 }
  for i, w in ipairs(WORDS) do vocab[w] = 3 + i end
  local lang_id = lang and (#WORDS + 4) or nil
  local tok = { vocab_size = #WORDS + 4 + (lang and 1 or 0), pad_id = 1, bos_id = 0, eos_id = 2, unk_id = 3,
    fingerprint = "fake-" .. tostring(lang), calls = 0 }
  function tok:encode(text, opts)
    local ids = {}
    if opts and opts.special and not lang then ids[1] = 0 end
    for w in text:lower():gmatch("[%w]+") do ids[#ids + 1] = vocab[w] or 3 end
    if opts and opts.special then
      ids[#ids + 1] = 2
      if lang then ids[#ids + 1] = lang_id end
    end
    return ids
  end
  function tok:encode_batch(texts, opts)
    self.calls = self.calls + 1
    local out = {}
    for i, t in ipairs(texts) do out[i] = self:encode(t, opts) end
    return out
  end
  return tok
end

local function words(n, offset)
  local out = {}
  for i = 1, n do out[i] = WORDS[(i + (offset or 0) - 1) % 26 + 1] end
  return table.concat(out, " ")
end

local function jsonl_line(doc, summary)
  return ('{"document": "%s", "summary": "%s"}\n'):format(doc, summary)
end

-- A corpus of n examples with varied lengths.
local function corpus(dir, n, name)
  local lines = {}
  for i = 1, n do lines[i] = jsonl_line(words(1 + (i * 7) % 23, i), words(1 + (i * 3) % 5, i + 1)) end
  return files.write(dir .. "/" .. (name or "train.jsonl"), table.concat(lines))
end

local function dataset(path, extra)
  local opts = { path = path, source = "document", target = "summary", tokenizer = fake_tokenizer(), cache = false }
  for k, v in pairs(extra or {}) do opts[k] = v end
  return data.dataset(opts)
end

local function all_batches(loader)
  local out = {}
  for b in loader:batches() do
    out[#out + 1] = b
  end
  return out
end

local function indices_of(batches)
  local out = {}
  for i, b in ipairs(batches) do out[i] = b.indices end
  return out
end

-- transformers' shift_tokens_right (modeling_bart / modeling_mbart) written
-- out on padded label rows, as the reference the engine must match.
local function hf_shift(label_rows, pad, start, mbart)
  local out = {}
  for r, row in ipairs(label_rows) do
    local ids = {}
    for j, v in ipairs(row) do ids[j] = v == -100 and pad or v end
    local first = start
    if mbart then
      local n = 0
      for _, v in ipairs(ids) do if v ~= pad then n = n + 1 end end
      first = ids[n]
    end
    local shifted = { first }
    for j = 2, #ids do shifted[j] = ids[j - 1] end
    out[r] = shifted
  end
  return out
end

-- ---- reading ------------------------------------------------------------------

describe("data reading", function()
  local dir
  before_each(function() dir = files.tempdir() end)
  after_each(function() files.remove_tree(dir) end)

  it("reads JSON Lines fields, nested fields and array elements, skipping blank lines", function()
    local path = files.write(dir .. "/t.jsonl", table.concat({
      '{"translation": {"en": "hello world", "de": "hallo welt"}, "answers": {"text": ["first", "second"]}, "a.b": "dotted"}',
      '',
      '   ',
      '{"translation": {"en": "one two", "de": "eins zwei"}, "answers": {"text": ["x"]}, "a.b": "d2"}\r',
    }, "\n"))
    local got = {}
    for line, src, tgt in data.read.records(path, { source = "translation.en", target = "translation.de" }) do
      got[#got + 1] = { line, src, tgt }
    end
    assert.same({ { 1, "hello world", "hallo welt" }, { 4, "one two", "eins zwei" } }, got)
    local firsts = {}
    for _, src, tgt in data.read.records(path, { source = "answers.text.0", target = "a.b" }) do
      firsts[#firsts + 1] = src .. "|" .. tgt
    end
    assert.same({ "first|dotted", "x|d2" }, firsts)
  end)

  it("names the file, the line and the problem for bad lines", function()
    local function first_error(text, opts)
      local path = files.write(dir .. "/bad.jsonl", text)
      return error_of(function()
        for _ in data.read.records(path, opts or { source = "document", target = "summary" }) do end
      end)
    end
    local good = jsonl_line("a b", "c")
    local e = first_error(good .. good .. '{"document": "a", "summary": }\n')
    assert.matches("bad.jsonl:3: invalid JSON", e, 1, true)
    e = first_error(good .. '{"document": "a"}\n')
    assert.matches("bad.jsonl:2: no field 'summary' (keys: document)", e, 1, true)
    e = first_error('{"document": 5, "summary": "x"}\n')
    assert.matches("bad.jsonl:1: field 'document' is a number; expected a string", e, 1, true)
    e = first_error('["document"]\n')
    assert.matches("bad.jsonl:1: expected a JSON object per line, got an array", e, 1, true)
    e = first_error('{"translation": {"de": "x"}}\n', { source = "translation.en" })
    assert.matches("bad.jsonl:1: no field 'translation.en' (keys of 'translation': de)", e, 1, true)
    e = first_error('{"translation": "x"}\n', { source = "translation.en" })
    assert.matches("bad.jsonl:1: no field 'translation.en': 'translation' is a string", e, 1, true)
  end)

  it("reads TSV columns by number or by header name", function()
    local path = files.write(dir .. "/t.tsv", "id\tsrc\ttgt\n1\thello world\thallo\n\n2\tone two\teins\r\n")
    local got = {}
    for line, src, tgt in data.read.records(path, { source = "src", target = "tgt" }) do
      got[#got + 1] = { line, src, tgt }
    end
    assert.same({ { 2, "hello world", "hallo" }, { 4, "one two", "eins" } }, got)
    got = {}
    local nohead = files.write(dir .. "/n.tsv", "hello\tworld\nx\ty\n")
    for line, src, tgt in data.read.records(nohead, { source = 2, target = 1 }) do got[#got + 1] = { line, src, tgt } end
    assert.same({ { 1, "world", "hello" }, { 2, "y", "x" } }, got)
  end)

  it("reports TSV lines with too few columns and unknown column names", function()
    local path = files.write(dir .. "/t.tsv", "src\ttgt\na\tb\nonly-one\n")
    local e = error_of(function() for _ in data.read.records(path, { source = "src", target = "tgt" }) do end end)
    assert.matches("t.tsv:3: expected at least 2 tab-separated columns, found 1", e, 1, true)
    e = error_of(function() data.read.open(path, { source = "text", target = "tgt" }) end)
    assert.matches("t.tsv:1: no column named 'text' in the header (columns: src, tgt)", e, 1, true)
  end)

  it("respects limit and refuses unknown formats", function()
    local path = corpus(dir, 10)
    local ds = dataset(path, { limit = 4 })
    assert.equal(4, ds:size())
    assert.matches("cannot tell the format", error_of(function()
      data.read.open(files.write(dir .. "/x.txt", "a"), { source = 1 })
    end), 1, true)
  end)
end)

-- ---- tokenizing and truncating -------------------------------------------------------

describe("data truncation", function()
  local dir
  before_each(function() dir = files.tempdir() end)
  after_each(function() files.remove_tree(dir) end)

  it("keeps <s> and </s> when cutting BART sequences, as transformers does", function()
    local path = files.write(dir .. "/t.jsonl",
      jsonl_line("a b c d e f g h", "one two three") .. jsonl_line("a b", "x"))
    local ds = dataset(path, { max_source_length = 5, max_target_length = 4 })
    -- a..h are ids 4..11; tokenizer(text, max_length=5, truncation=True) = <s> a b c </s>
    assert.same({ 0, 4, 5, 6, 2 }, ds:source_ids(1))
    assert.same({ 0, 30, 31, 2 }, ds:target_ids(1))
    assert.same({ 0, 4, 5, 2 }, ds:source_ids(2))
    assert.same({ 1, 1 }, { ds.stats.truncated_source, ds.stats.truncated_target })
  end)

  it("keeps `</s> lang` when cutting mBART sequences", function()
    local path = files.write(dir .. "/t.jsonl", jsonl_line("a b c d e f", "one two three four"))
    local tok = fake_tokenizer("de_DE")
    local ds = data.dataset({ path = path, source = "document", target = "summary", tokenizer = tok,
      max_source_length = 4, max_target_length = 5, model = "mbart", cache = false })
    local lang = tok.vocab_size - 1
    assert.same({ 4, 5, 2, lang }, ds:source_ids(1))
    assert.same({ 30, 31, 32, 2, lang }, ds:target_ids(1))
  end)

  it("encodes targets with a target tokenizer when given one (mBART languages)", function()
    local path = files.write(dir .. "/t.jsonl", jsonl_line("a b", "one"))
    local src_tok, tgt_tok = fake_tokenizer("en_XX"), fake_tokenizer("ro_RO")
    tgt_tok.vocab_size = tgt_tok.vocab_size + 1
    local lang = tgt_tok.vocab_size - 2
    function tgt_tok:encode(text, opts)
      local ids = {}
      for w in text:gmatch("%w+") do ids[#ids + 1] = 30 end
      if opts and opts.special then ids[#ids + 1] = 2; ids[#ids + 1] = lang + 1 end
      return ids
    end
    local ds = data.dataset({ path = path, source = "document", target = "summary", tokenizer = src_tok,
      target_tokenizer = tgt_tok, model = "mbart", cache = false })
    assert.same({ 4, 5, 2, lang }, ds:source_ids(1))
    assert.same({ 30, 2, lang + 1 }, ds:target_ids(1))
  end)

  it("refuses an empty data file", function()
    local path = files.write(dir .. "/t.jsonl", "\n")
    assert.matches("has no examples", error_of(function() dataset(path) end), 1, true)
  end)

  it("refuses a maximum length with no room for text", function()
    local path = files.write(dir .. "/t.jsonl", jsonl_line("a b", "c"))
    assert.matches("max_source_length 2 leaves no room", error_of(function()
      dataset(path, { max_source_length = 2 })
    end), 1, true)
  end)

  it("rejects unknown options with the nearest valid one", function()
    assert.matches("unknown option 'max_source_len' (did you mean 'max_source_length'?)", error_of(function()
      data.dataset({ path = "x.jsonl", max_source_len = 3 })
    end), 1, true)
  end)
end)

-- ---- batches ----------------------------------------------------------------------------

describe("data batches", function()
  local dir
  before_each(function() dir = files.tempdir() end)
  after_each(function() files.remove_tree(dir) end)

  it("pads, masks, sets -100 and shifts labels right behind decoder_start_token_id (BART)", function()
    local path = files.write(dir .. "/t.jsonl", jsonl_line("a b c", "one two three") .. jsonl_line("d", "four"))
    local ds = dataset(path)
    local b = ds:loader({ batch_size = 2, shuffle = false, bucket = false }):next()
    assert.same({ 1, 2 }, b.indices)
    assert.same({ { 0, 4, 5, 6, 2 }, { 0, 7, 2, 1, 1 } }, b.input_ids:totable())
    assert.same({ { 1, 1, 1, 1, 1 }, { 1, 1, 1, 0, 0 } }, b.attention_mask:totable())
    local labels = b.labels:totable()
    assert.same({ { 0, 30, 31, 32, 2 }, { 0, 33, 2, -100, -100 } }, labels)
    assert.same({ { 1, 1, 1, 1, 1 }, { 1, 1, 1, 0, 0 } }, b.decoder_attention_mask:totable())
    assert.same(hf_shift(labels, 1, 2, false), b.decoder_input_ids:totable())
    assert.same({ { 2, 0, 30, 31, 32 }, { 2, 0, 33, 2, 1 } }, b.decoder_input_ids:totable())
    for _, name in ipairs({ "input_ids", "attention_mask", "decoder_input_ids", "decoder_attention_mask", "labels" }) do
      assert.equal("i64", b[name]:type())
      assert.equal("cpu", b[name]:device_name())
    end
    assert.equal(8, b.source_tokens)
    assert.equal(8, b.target_tokens)
  end)

  it("wraps the language code of mBART labels to the front", function()
    local path = files.write(dir .. "/t.jsonl", jsonl_line("a b", "one two three") .. jsonl_line("c", "four"))
    local tok = fake_tokenizer("ro_RO")
    local lang = tok.vocab_size - 1
    local ds = data.dataset({ path = path, source = "document", target = "summary", tokenizer = tok,
      model = "mbart", cache = false })
    local b = ds:loader({ batch_size = 2, shuffle = false, bucket = false }):next()
    local labels = b.labels:totable()
    assert.same({ { 30, 31, 32, 2, lang }, { 33, 2, lang, -100, -100 } }, labels)
    assert.same(hf_shift(labels, 1, nil, true), b.decoder_input_ids:totable())
    assert.same({ { lang, 30, 31, 32, 2 }, { lang, 33, 2, lang, 1 } }, b.decoder_input_ids:totable())
  end)

  it("gives source-only batches for data without a target", function()
    local path = corpus(dir, 5)
    local ds = data.dataset({ path = path, source = "document", tokenizer = fake_tokenizer(), cache = false })
    local b = ds:loader({ batch_size = 5, shuffle = false }):next()
    assert.equal(5, b.size)
    assert.is_nil(b.labels)
    assert.is_nil(b.decoder_input_ids)
    assert.equal(5, b.input_ids:size(1))
  end)

  it("rounds padded lengths to a multiple and fills preallocated fixed shapes", function()
    local path = files.write(dir .. "/t.jsonl", jsonl_line("a b c", "one") .. jsonl_line("d", "four five"))
    local ds = dataset(path)
    local b = ds:loader({ batch_size = 2, shuffle = false, bucket = false, pad_multiple = 8 }):next()
    assert.same({ 2, 8 }, b.input_ids:size())
    assert.same({ 2, 8 }, b.labels:size())
    local outs = {}
    for _, name in ipairs({ "input_ids", "attention_mask" }) do outs[name] = dq.zeros({ 2, 12 }, { dtype = "i64" }) end
    for _, name in ipairs({ "decoder_input_ids", "decoder_attention_mask", "labels" }) do
      outs[name] = dq.zeros({ 2, 6 }, { dtype = "i64" })
    end
    local fixed = ds:loader({ batch_size = 2, shuffle = false, bucket = false }):next(outs)
    assert.equal(outs.input_ids, fixed.input_ids)
    fixed:free()
    assert.is_true(outs.input_ids:defined())
    assert.same({ 0, 4, 5, 6, 2, 1, 1, 1, 1, 1, 1, 1 }, fixed.input_ids:totable()[1])
    assert.same({ 0, 33, 34, 2, -100, -100 }, fixed.labels:totable()[2])
    local small = { input_ids = dq.zeros({ 2, 3 }, { dtype = "i64" }), attention_mask = dq.zeros({ 2, 3 }, { dtype = "i64" }) }
    assert.matches("dq_data_pack: input_ids is [2, 3] i64 cpu but the batch needs i64 cpu [2, >= 5]",
      error_of(function() ds:loader({ batch_size = 2, shuffle = false, bucket = false }):next(small) end), 1, true)
  end)

  it("batches by example count: every example once per epoch", function()
    local ds = dataset(corpus(dir, 103))
    local loader = ds:loader({ batch_size = 8, seed = 3, chunk_size = 32 })
    local seen, sizes = {}, 0
    local batches = all_batches(loader)
    assert.equal(loader:state().epoch, 2)
    for _, b in ipairs(batches) do
      assert.is_true(b.size <= 8)
      sizes = sizes + b.size
      for _, i in ipairs(b.indices) do
        assert.is_nil(seen[i])
        seen[i] = true
      end
    end
    assert.equal(103, sizes)
  end)

  it("batches by token budget counting padding", function()
    local ds = dataset(corpus(dir, 200))
    local budget = 64
    local batches = all_batches(ds:loader({ max_tokens = budget, seed = 5 }))
    local total, big = 0, 0
    for _, b in ipairs(batches) do
      local s, t = b.input_ids:size(2), b.labels:size(2)
      assert.is_true(b.size * s <= budget and b.size * t <= budget,
        ("batch of %d x (%d, %d) exceeds %d tokens"):format(b.size, s, t, budget))
      total = total + b.size
      if b.size > 4 then big = big + 1 end
    end
    assert.equal(200, total)
    assert.is_true(big > 0, "short examples should share batches")
    assert.matches("more than max_tokens 10 allows", error_of(function()
      ds:loader({ max_tokens = 10 }):next()
    end), 1, true)
  end)

  it("bucketing by length pads less than random batches", function()
    local ds = dataset(corpus(dir, 300))
    local function padded(opts)
      local n = 0
      for _, b in ipairs(all_batches(ds:loader(opts))) do n = n + b.input_ids:nelement() end
      return n
    end
    local bucketed = padded({ batch_size = 10, seed = 1 })
    local random = padded({ batch_size = 10, seed = 1, bucket = false })
    assert.is_true(bucketed < 0.8 * random, ("bucketed %d vs random %d padded tokens"):format(bucketed, random))
  end)

  it("shuffles the order of length-sorted batches", function()
    local ds = dataset(corpus(dir, 200))
    local longest = {}
    for i, b in ipairs(all_batches(ds:loader({ batch_size = 10, seed = 4, chunk_size = 200 }))) do
      longest[i] = b.input_ids:size(2)
    end
    local sorted = {}
    for i, v in ipairs(longest) do sorted[i] = v end
    table.sort(sorted, function(a, b) return a > b end)
    assert.are_not.same(sorted, longest)
  end)

  it("evaluation order: sequential, or sorted longest first", function()
    local ds = dataset(corpus(dir, 20))
    local seq = indices_of(all_batches(ds:loader({ batch_size = 6, shuffle = false, bucket = false })))
    assert.same({ { 1, 2, 3, 4, 5, 6 }, { 7, 8, 9, 10, 11, 12 }, { 13, 14, 15, 16, 17, 18 }, { 19, 20 } }, seq)
    local lengths = ds:source_lengths()
    local last = math.huge
    for _, b in ipairs(all_batches(ds:loader({ batch_size = 6, shuffle = false }))) do
      for _, i in ipairs(b.indices) do
        assert.is_true(lengths[i] <= last)
        last = lengths[i]
      end
    end
  end)

  it("is the same for the same seed and epoch, whatever the thread count", function()
    local ds = dataset(corpus(dir, 150))
    local opts = { batch_size = 7, seed = 11, chunk_size = 40 }
    local threads = dq.get_num_threads()
    dq.set_num_threads(1)
    local a = indices_of(all_batches(ds:loader(opts)))
    dq.set_num_threads(2)
    local b = indices_of(all_batches(ds:loader(opts)))
    dq.set_num_threads(threads)
    assert.same(a, b)
    local l2 = ds:loader(opts)
    all_batches(l2)
    local epoch2 = indices_of(all_batches(l2))
    assert.are_not.same(a, epoch2)
    assert.same(epoch2, indices_of(all_batches(ds:loader({ batch_size = 7, seed = 11, chunk_size = 40, epoch = 2 }))))
    assert.are_not.same(a, indices_of(all_batches(ds:loader({ batch_size = 7, seed = 12, chunk_size = 40 }))))
  end)

  it("resumes exactly from a saved state, also across epochs", function()
    local ds = dataset(corpus(dir, 60))
    local opts = { batch_size = 4, seed = 9, chunk_size = 16 }
    local full = ds:loader(opts)
    local first = indices_of(all_batches(full))
    local second = indices_of(all_batches(full))
    local run = ds:loader(opts)
    for _ = 1, 5 do run:next() end
    local state = run:state()
    assert.same({ 1, 5 }, { state.epoch, state.position })
    local resumed = ds:loader({ batch_size = 4, seed = 9, chunk_size = 16, state = state })
    local rest = indices_of(all_batches(resumed))
    for i = 6, #first do assert.same(first[i], rest[i - 5]) end
    assert.equal(#first - 5, #rest)
    assert.same(second, indices_of(all_batches(resumed)))
    assert.matches("other data or options", error_of(function()
      ds:loader({ batch_size = 5, seed = 9, state = state })
    end), 1, true)
  end)

  it("splits each epoch's batches between data-parallel ranks", function()
    local ds = dataset(corpus(dir, 90))
    local all = indices_of(all_batches(ds:loader({ batch_size = 4, seed = 2 })))
    local ranks = {}
    for rank = 0, 2 do
      ranks[rank] = indices_of(all_batches(ds:loader({ batch_size = 4, seed = 2, rank = rank, world_size = 3 })))
      assert.equal(math.floor(#all / 3), #ranks[rank])
    end
    for k = 1, #ranks[0] do
      for rank = 0, 2 do assert.same(all[(k - 1) * 3 + rank + 1], ranks[rank][k]) end
    end
    assert.matches("rank must be an integer in 0..2", error_of(function()
      ds:loader({ batch_size = 4, rank = 3, world_size = 3 })
    end), 1, true)
  end)

  it("moves batches to another device and frees them", function()
    local ds = dataset(corpus(dir, 4))
    local b = ds:loader({ batch_size = 4 }):next()
    local c = b:to("cpu")
    assert.same(b.input_ids:totable(), c.input_ids:totable())
    assert.same(b.indices, c.indices)
    c:free()
    assert.is_false(c.input_ids:defined())
    assert.is_true(b.input_ids:defined())
  end)
end)

-- ---- the token cache ----------------------------------------------------------------------

describe("data token cache", function()
  local dir
  before_each(function() dir = files.tempdir() end)
  after_each(function() files.remove_tree(dir) end)

  local function cached(path, extra)
    local tok = (extra and extra.tokenizer) or fake_tokenizer()
    local opts = { path = path, source = "document", target = "summary", tokenizer = tok,
      max_source_length = 12, log = function() end }
    for k, v in pairs(extra or {}) do opts[k] = v end
    return data.dataset(opts), tok
  end

  local function contents(ds)
    local out = {}
    for i = 1, ds:size() do out[i] = { ds:source_ids(i), ds:target_ids(i) } end
    return out
  end

  it("builds once, then reuses the cache without tokenizing", function()
    local path = corpus(dir, 30)
    local ds = cached(path)
    assert.equal("built", ds.cache_status)
    assert.equal(dir, ds.cache_path:match("^(.*)/"))
    assert.matches("^train%.jsonl%.%x+%.dqcache$", ds.cache_path:match("[^/]+$"))
    local again, tok = cached(path)
    assert.equal("hit", again.cache_status)
    assert.equal(0, tok.calls)
    assert.same(contents(ds), contents(again))
  end)

  it("is keyed by the data, the tokenizer and the settings", function()
    local path = corpus(dir, 30)
    local ds = cached(path)
    assert.equal("built", cached(path, { max_source_length = 10 }).cache_status)
    assert.equal("built", cached(path, { target = "document" }).cache_status)
    assert.equal("built", cached(path, { tokenizer = fake_tokenizer("de_DE") }).cache_status)
    files.write(path, files.read(path) .. jsonl_line("a", "b"))
    local changed = cached(path)
    assert.equal("built", changed.cache_status)
    assert.equal(31, changed:size())
    assert.are_not.equal(ds.cache_path, changed.cache_path)
  end)

  it("detects a truncated or damaged cache and rebuilds it", function()
    local path = corpus(dir, 30)
    local ds = cached(path)
    local bytes = files.read(ds.cache_path)
    local notes = {}
    local function log(m) notes[#notes + 1] = m end
    files.write(ds.cache_path, bytes:sub(1, #bytes - 7))
    local rebuilt = cached(path, { log = log })
    assert.equal("built", rebuilt.cache_status)
    assert.matches("not a usable token cache: it has %d+ bytes but its header promises", notes[1])
    assert.same(contents(ds), contents(rebuilt))
    assert.equal("hit", cached(path).cache_status)
    -- one flipped byte in the payload
    local flipped = bytes:sub(1, 100) .. string.char((bytes:byte(101) + 1) % 256) .. bytes:sub(102)
    files.write(ds.cache_path, flipped)
    notes = {}
    assert.equal("built", cached(path, { log = log }).cache_status)
    assert.matches("checksum does not match; rebuilding it", notes[1], 1, true)
    files.write(ds.cache_path, "garbage")
    assert.equal("built", cached(path, { log = function() end }).cache_status)
    assert.equal("hit", cached(path).cache_status)
  end)

  it("uses a cache directory when asked, or when the data directory takes no files", function()
    local path = corpus(dir, 10)
    local elsewhere = dir .. "/cache"
    local ds = cached(path, { cache_dir = elsewhere })
    assert.equal(elsewhere, ds.cache_path:match("^(.*)/"))
    assert.equal("hit", cached(path, { cache_dir = elsewhere }).cache_status)
    local cache = require("dqbart.data.cache")
    local saved = cache.save({ "/proc/dqbart-no-such-dir/x.dqcache", elsewhere .. "/y.dqcache" }, ds.key, ds.store)
    assert.equal(elsewhere .. "/y.dqcache", saved)
    -- no temporary files are left behind
    local listing = io.popen("ls -a '" .. elsewhere .. "'"):read("*a")
    assert.is_nil(listing:match("tmp"))
  end)

  it("hashes with XXH64", function()
    local engine = require("dqbart.data_engine")
    assert.equal("ef46db3751d8e999", engine.hash(""))
    assert.equal("44bc2cf5ad770999", engine.hash("abc"))
    local text = ("The quick brown fox jumps over the lazy dog. "):rep(3)
    assert.equal(engine.hash(text), engine.hash_file(files.write(dir .. "/h.txt", text)))
  end)
end)

-- ---- with the real tokenizer, against transformers -------------------------------------

describe("data with dq.tokenizer", function()
  local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "spec"
  local fixtures = here .. "/fixtures"
  local cjson = require("cjson")
  local f = assert(io.open(fixtures .. "/debsum/hf_batches.json"))
  local expected = cjson.decode(f:read("*a"))
  f:close()

  local function same_batch(want, b)
    for _, name in ipairs({ "input_ids", "attention_mask", "labels", "decoder_input_ids" }) do
      assert.same(want[name], b[name]:totable(), name)
    end
  end

  it("gives transformers' BART batches (truncation, collator padding, shift_tokens_right)", function()
    local want = expected.bart
    local tok = dq.tokenizer.load(fixtures .. "/tokenizers/bart_bpe")
    local ds = data.dataset({ path = fixtures .. "/debsum/valid.jsonl", source = "document", target = "summary",
      tokenizer = tok, limit = 6, max_source_length = want.max_source_length,
      max_target_length = want.max_target_length, cache = false })
    assert.equal(want.pad_id, ds.pad_id)
    same_batch(want, ds:loader({ batch_size = 6, shuffle = false, bucket = false }):next())
  end)

  it("gives transformers' mBART batches (language codes, wrapped decoder start)", function()
    local want = expected.mbart
    local dir = fixtures .. "/tokenizers/mbart_unigram"
    local ds = data.dataset({ path = fixtures .. "/debtrans/valid.jsonl", source = "translation.en",
      target = "translation.de", tokenizer = dq.tokenizer.load(dir),
      target_tokenizer = dq.tokenizer.load(dir, { template = "$A </s> de_DE" }), model = "mbart", limit = 6,
      max_source_length = want.max_source_length, max_target_length = want.max_target_length, cache = false })
    same_batch(want, ds:loader({ batch_size = 6, shuffle = false, bucket = false }):next())
  end)

  it("keys the cache by the tokenizer's files", function()
    local dir = files.tempdir()
    local path = files.write(dir .. "/t.jsonl", files.read(fixtures .. "/debsum/test.jsonl"))
    local function build(tokdir)
      return data.dataset({ path = path, source = "document", target = "summary", limit = 50,
        tokenizer = dq.tokenizer.load(tokdir), max_source_length = 64, log = function() end })
    end
    local tokdir = dir .. "/tok"
    os.execute(("mkdir -p '%s' && cp '%s'/* '%s'"):format(tokdir, fixtures .. "/tokenizers/bart_bpe", tokdir))
    local first = build(tokdir)
    assert.equal("built", first.cache_status)
    assert.equal("hit", build(tokdir).cache_status)
    -- same behaviour, one more byte in a tokenizer file: another key
    local merges = files.read(tokdir .. "/merges.txt")
    files.write(tokdir .. "/merges.txt", merges .. "\n")
    local changed = build(tokdir)
    assert.equal("built", changed.cache_status)
    assert.are_not.equal(first.cache_path, changed.cache_path)
    files.remove_tree(dir)
  end)
end)
