-- Tokenizers: parity with Hugging Face's tokenizers / transformers on the
-- fixtures of spec/fixtures/make_tokenizer_fixtures.py (byte-level BPE,
-- its vocab.json + merges.txt form, an mBART-style unigram with a
-- precompiled nmt_nfkc charsmap, a byte-fallback unigram), the GPT-2
-- character classes of every code point, the BPE trainer's merges, the
-- `dqbart tokenize` contract, and load-time refusals.
local json = require("dkjson")
local ffi = require("ffi")
local files = require("files")
local launcher = require("launcher")

local FIX = "spec/fixtures/tokenizers/"

local function read_jsonl(path)
  local out = {}
  for line in files.read(path):gmatch("[^\n]+") do out[#out + 1] = assert(json.decode(line)) end
  return out
end

local TEXTS = read_jsonl(FIX .. "texts.jsonl")

local function same_ids(a, b)
  if #a ~= #b then return false end
  for i = 1, #a do if a[i] ~= b[i] then return false end end
  return true
end

local function ids_str(ids) return "[" .. table.concat(ids, ",") .. "]" end

-- Collect mismatches and fail once with the first few, so a failure says
-- which texts differ rather than dumping two huge tables.
local function checker(what)
  local bad, total, shown = 0, 0, {}
  return {
    check = function(ok, detail)
      total = total + 1
      if not ok then
        bad = bad + 1
        if #shown < 5 then shown[#shown + 1] = detail() end
      end
    end,
    done = function()
      assert(total > 0, what .. ": nothing was checked")
      if bad > 0 then
        error(("%s: %d of %d differ, e.g.\n  %s"):format(what, bad, total, table.concat(shown, "\n  ")), 2)
      end
    end,
  }
end

-- cases: line i for TEXTS[i] ({ids, ids_plain?, decode?, decode_skip?}),
-- then decode-only records. wrap: template ids before and after the text.
local function check_parity(tok, cases, wrap, name)
  local enc, plain, dec, dec_skip, batch = checker(name .. " ids"), checker(name .. " ids without special tokens"),
    checker(name .. " decode"), checker(name .. " decode skip_special"), checker(name .. " encode_batch")
  local all = tok:encode_batch(TEXTS)
  for i, text in ipairs(TEXTS) do
    local c = cases[i]
    local ids = tok:encode(text)
    enc.check(same_ids(ids, c.ids), function() return ("%q: got %s want %s"):format(text, ids_str(ids), ids_str(c.ids)) end)
    batch.check(same_ids(all[i], c.ids), function() return ("%q: batch %s want %s"):format(text, ids_str(all[i]), ids_str(c.ids)) end)
    local want_plain = c.ids_plain
    if not want_plain then
      want_plain = {}
      for k = wrap[1] + 1, #c.ids - wrap[2] do want_plain[#want_plain + 1] = c.ids[k] end
    end
    local p = tok:encode(text, { special = false })
    plain.check(same_ids(p, want_plain), function() return ("%q: got %s want %s"):format(text, ids_str(p), ids_str(want_plain)) end)
    local want = c.decode or text
    local d = tok:decode(c.ids)
    dec.check(d == want, function() return ("%q: got %q want %q"):format(text, d, want) end)
    local want_skip = c.decode_skip or want
    local ds = tok:decode(c.ids, { skip_special = true })
    dec_skip.check(ds == want_skip, function() return ("%q: got %q want %q"):format(text, ds, want_skip) end)
  end
  for i = #TEXTS + 1, #cases do
    local c = cases[i]
    local d, ds = tok:decode(c.decode_ids), tok:decode(c.decode_ids, { skip_special = true })
    dec.check(d == c.decode, function() return ("%s: got %q want %q"):format(ids_str(c.decode_ids), d, c.decode) end)
    dec_skip.check(ds == c.decode_skip, function() return ("%s: got %q want %q"):format(ids_str(c.decode_ids), ds, c.decode_skip) end)
  end
  for _, c in ipairs({ enc, plain, dec, dec_skip, batch }) do c.done() end
end

describe("dq.tokenizer", function()
  local bpe_cases = read_jsonl(FIX .. "bart_bpe_cases.jsonl")

  it("byte-level BPE from tokenizer.json matches the tokenizers library", function()
    local tok = dq.tokenizer.load(FIX .. "bart_bpe")
    assert.same({ 2000, 1, 0, 2, 3, 4 }, { tok.vocab_size, tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id, tok.mask_id })
    check_parity(tok, bpe_cases, { 1, 1 }, "bart_bpe")
  end)

  it("vocab.json + merges.txt (+ tokenizer_config.json) match transformers' BartTokenizer", function()
    local tok = dq.tokenizer.load(FIX .. "bart_legacy")
    assert.same({ 2000, 1, 0, 2, 3, 4 }, { tok.vocab_size, tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id, tok.mask_id })
    check_parity(tok, bpe_cases, { 1, 1 }, "bart_legacy")
  end)

  it("bare vocab.json + merges.txt get BART's special tokens, <mask> stripping the space on its left", function()
    local d = files.tempdir()
    files.write(d .. "/vocab.json", files.read(FIX .. "bart_legacy/vocab.json"))
    files.write(d .. "/merges.txt", files.read(FIX .. "bart_legacy/merges.txt"))
    local tok = dq.tokenizer.load(d)
    files.remove_tree(d)
    check_parity(tok, bpe_cases, { 1, 1 }, "bare vocab/merges")
    assert.same(tok:encode("a <mask>"), tok:encode("a<mask>"))
  end)

  it("mBART-style unigram (Precompiled nmt_nfkc, Metaspace, language codes) matches the tokenizers library", function()
    local tok = dq.tokenizer.load(FIX .. "mbart_unigram/tokenizer.json")
    assert.equal(tok:token_to_id("<mask>"), tok.mask_id)
    assert.same({ 1, 0, 2, 3 }, { tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id })
    assert.is_true(tok:is_special(tok:token_to_id("en_XX")))
    check_parity(tok, read_jsonl(FIX .. "mbart_unigram_cases.jsonl"), { 0, 2 }, "mbart_unigram")
  end)

  it("mBART's target template X </s> ro_RO", function()
    local tok = dq.tokenizer.load(FIX .. "mbart_unigram", { template = "$A </s> ro_RO" })
    local c = checker("mbart ro_RO")
    for i, ids in ipairs(read_jsonl(FIX .. "mbart_unigram_ro_cases.jsonl")) do
      local got = tok:encode(TEXTS[i])
      c.check(same_ids(got, ids), function() return ("%q: got %s want %s"):format(TEXTS[i], ids_str(got), ids_str(ids)) end)
    end
    c.done()
    tok:set_template("")
    assert.same(tok:encode("Hello", { special = false }), tok:encode("Hello"))
    assert.has_error(function() tok:set_template("$A </s> xx_YY") end, "dq_tokenizer_set_template: \"xx_YY\" in \"$A </s> xx_YY\" is not a token of the vocabulary")
  end)

  it("byte-fallback unigram (regex Replace, Metaspace first, ByteFallback decoder) matches the tokenizers library", function()
    local tok = dq.tokenizer.load(FIX .. "unigram_fallback")
    check_parity(tok, read_jsonl(FIX .. "unigram_fallback_cases.jsonl"), { 1, 1 }, "unigram_fallback")
  end)

  it("classes every code point as the library's GPT-2 pattern does", function()
    -- Exact for every code point assigned in utf8proc's Unicode version; the
    -- library's regex engine may know a newer Unicode, whose additions
    -- utf8proc reports as unassigned (category Cn) and dqbart classes as
    -- "other" (documented in engine/pretokenize.c).
    local C = require("dqbart.ffi").C
    ffi.cdef("int utf8proc_category(int32_t codepoint); const char *utf8proc_unicode_version(void);")
    local ok, u8 = pcall(ffi.load, "utf8proc")
    if not ok then u8 = ffi.load("libutf8proc.so.2") end
    local starts, classes = {}, {}
    for line in files.read(FIX .. "gpt2_classes.txt"):gmatch("[^\n]+") do
      local cp, k = line:match("^(%x+) (%d)$")
      starts[#starts + 1] = tonumber(cp, 16)
      classes[#classes + 1] = tonumber(k)
    end
    starts[#starts + 1] = 0x110000
    local c, newer = checker("GPT-2 classes"), 0
    for r = 1, #classes do
      for cp = starts[r], starts[r + 1] - 1 do
        if cp < 0xD800 or cp > 0xDFFF then
          local k = C.dq_gpt2_char_class(cp)
          if k ~= classes[r] and u8.utf8proc_category(cp) == 0 then
            newer = newer + 1
          else
            c.check(k == classes[r], function() return ("U+%04X: class %d, the library's %d"):format(cp, k, classes[r]) end)
          end
        end
      end
    end
    c.done()
    print(("\n  GPT-2 classes: %d code points assigned after Unicode %s (utf8proc) class as other"):format(newer,
      ffi.string(u8.utf8proc_unicode_version())))
  end)

  it("encode_batch on more threads than cores gives what encode gives", function()
    local tok = dq.tokenizer.load(FIX .. "mbart_unigram")
    local texts = {}
    for r = 1, 8 do for i = 1, #TEXTS do texts[#texts + 1] = TEXTS[i] .. (r > 1 and (" " .. r) or "") end end
    local threads = dq.get_num_threads()
    dq.set_num_threads(4)
    local ok, all = pcall(tok.encode_batch, tok, texts)
    dq.set_num_threads(threads)
    assert(ok, all)
    local c = checker("4-thread encode_batch")
    for i, t in ipairs(texts) do
      local one = tok:encode(t)
      c.check(same_ids(all[i], one), function() return ("%q: batch %s, encode %s"):format(t, ids_str(all[i]), ids_str(one)) end)
    end
    c.done()
  end)

  it("reads invalid UTF-8 as U+FFFD and maps ids and tokens both ways", function()
    local tok = dq.tokenizer.load(FIX .. "bart_bpe")
    assert.same(tok:encode("a\239\191\189b"), tok:encode("a\255b"))
    assert.same(tok:encode("\239\191\189\239\191\189"), tok:encode("\226\130\255"))
    assert.equal(4, tok:token_to_id("<mask>"))
    assert.equal("<mask>", tok:id_to_token(4))
    assert.equal("Ġthe", tok:id_to_token(tok:token_to_id("Ġthe")))
    assert.is_nil(tok:token_to_id("no such token"))
    assert.is_nil(tok:id_to_token(123456))
    assert.same({}, tok:encode_batch({}))
    local ids, offsets = tok:encode_flat({ "a", "", "b c" }, { special = false })
    assert.same({ 0, 1, 1, 3 }, offsets:totable())
    assert.equal(3, ids:nelement())
    ids:free()
    offsets:free()
  end)

  it("refuses what it does not implement, naming it", function()
    local d = files.tempdir()
    local base = json.decode(files.read(FIX .. "bart_bpe/tokenizer.json"))
    local function refused(patch, message)
      local t = json.decode(json.encode(base))
      patch(t)
      files.write(d .. "/tokenizer.json", json.encode(t))
      local ok, err = pcall(dq.tokenizer.load, d)
      assert.is_false(ok)
      assert.matches(message, err, 1, true)
    end
    refused(function(t) t.pre_tokenizer = { type = "Whitespace" } end, 'pre_tokenizer type "Whitespace" is not supported')
    refused(function(t) t.normalizer = { type = "BertNormalizer" } end, 'normalizer type "BertNormalizer" is not supported')
    refused(function(t) t.decoder = { type = "WordPiece" } end, 'decoder type "WordPiece" is not supported')
    refused(function(t) t.normalizer = { type = "Replace", pattern = { Regex = "[ab]+" }, content = "x" } end,
      'Replace pattern Regex "[ab]+" is not supported')
    refused(function(t) t.normalizer = { type = "Replace", pattern = { Regex = " *" }, content = "x" } end,
      "can match the empty string")
    refused(function(t) t.model.merges[1] = { "Ġ", "no-such-token" } end, 'uses a token missing from the vocabulary ("no-such-token")')
    files.remove_tree(d)
    local ok, err = pcall(dq.tokenizer.load, "/nonexistent/tokenizer")
    assert.is_false(ok)
    assert.matches("/nonexistent/tokenizer: no such file or directory", err, 1, true)
  end)
end)

describe("dq.tokenizer.train_bpe", function()
  local corpus = FIX .. "corpus.txt"

  local function trained_like(dir, ref)
    for _, name in ipairs({ "vocab.json", "merges.txt" }) do
      local a, b = files.read(dir .. "/" .. name), files.read(ref .. "/" .. name)
      assert(a == b, ("%s differs from the tokenizers trainer's %s/%s"):format(name, ref, name))
    end
  end

  it("writes the merges and vocabulary of the tokenizers library's BpeTrainer", function()
    local d = files.tempdir()
    dq.tokenizer.train_bpe({ files = { corpus }, vocab_size = 2000, min_frequency = 2, out = d })
    trained_like(d, FIX .. "bart_bpe")
    -- its tokenizer.json is a working BART tokenizer
    local tok, ref = dq.tokenizer.load(d), dq.tokenizer.load(FIX .. "bart_bpe")
    for i = 1, 80 do assert.same(ref:encode(TEXTS[i]), tok:encode(TEXTS[i])) end
    assert.same({ ref.pad_id, ref.bos_id, ref.eos_id, ref.unk_id, ref.mask_id },
      { tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id, tok.mask_id })
    files.remove_tree(d)
  end)

  it("stops on min_frequency as the library does", function()
    local d = files.tempdir()
    dq.tokenizer.train_bpe({ files = { corpus }, vocab_size = 5000, min_frequency = 20, out = d })
    trained_like(d, FIX .. "trainer_minfreq")
    files.remove_tree(d)
  end)

  it("trains on texts as on the lines of a file", function()
    local lines = {}
    for line in files.read(corpus):gmatch("[^\n]*\n") do lines[#lines + 1] = line end
    local d = files.tempdir()
    dq.tokenizer.train_bpe({ texts = lines, vocab_size = 2000, min_frequency = 2, out = d })
    trained_like(d, FIX .. "bart_bpe")
    files.remove_tree(d)
  end)
end)

describe("dqbart tokenize", function()
  -- dqbart ARGS with stdin: its output, and whether it exited 0
  local function run(args, stdin)
    local out, code = launcher.run(args, stdin)
    return out, code == 0
  end

  local function lines_of(s)
    local out = {}
    for l in s:gmatch("([^\n]*)\n") do out[#out + 1] = l end
    return out
  end

  it("--json: one line of ids per JSON string, as the library encodes them", function()
    local cases = read_jsonl(FIX .. "mbart_unigram_cases.jsonl")
    local out, ok = run("tokenize --tokenizer " .. FIX .. "mbart_unigram --json", files.read(FIX .. "texts.jsonl"))
    assert(ok, out)
    local got = lines_of(out)
    assert.equal(#TEXTS, #got)
    for i = 1, #TEXTS do assert.equal(table.concat(cases[i].ids, " "), got[i]) end
  end)

  it("plain lines, --no-special, and --decode back", function()
    local tok = dq.tokenizer.load(FIX .. "bart_bpe")
    local texts = { "Hello world", "", "  spaces  ", "tab\there", "Ünïcödé<mask> x" }
    local out, ok = run("tokenize --tokenizer " .. FIX .. "bart_bpe --no-special", table.concat(texts, "\n"))
    assert(ok, out)
    local got = lines_of(out)
    assert.equal(#texts, #got)
    for i, t in ipairs(texts) do assert.equal(table.concat(tok:encode(t, { special = false }), " "), got[i]) end
    local back, ok2 = run("tokenize --tokenizer " .. FIX .. "bart_bpe --decode", out)
    assert(ok2, back)
    assert.same(texts, lines_of(back))
    local js, ok3 = run("tokenize --tokenizer " .. FIX .. "bart_bpe --decode --json --skip-special",
      table.concat(tok:encode("a\nb"), " ") .. "\n")
    assert(ok3, js)
    assert.equal('"a\\nb"\n', js)
  end)

  it("train-bpe writes the library's files", function()
    local d = files.tempdir()
    local out, ok = run(("train-bpe --input %scorpus.txt --vocab-size 2000 --min-frequency 2 --out %s"):format(FIX, d), "")
    assert(ok, out)
    assert.equal(files.read(FIX .. "bart_bpe/merges.txt"), files.read(d .. "/merges.txt"))
    files.remove_tree(d)
  end)
end)
