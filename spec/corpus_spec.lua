-- Corpora from Debian's package descriptions (dqbart data debsum / debtrans)
-- built from the synthetic apt lists in spec/fixtures/apt (made by
-- make_apt_fixture.py there), plus the committed samples of the real ones.
local dq = require("dqbart")
local corpus = require("dqbart.corpus")
local debian = require("dqbart.corpus_debian")
local cli = require("dqbart.cli.data")
local cjson = require("cjson")
local files = require("files")

local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "spec"
local APT = here .. "/fixtures/apt"

local MD5 = {
  alpha = "9347c6bf5570b92761fd399c851cdf8f", gamma = "9d24f05690835c6475251e615dacadb7",
  delta = "1411bf2c772081ae7fb2e8bc63d5dd38", zeta = "d489ee91fa3b0b2670e9c7cc1698ab6e",
  iota = "a5320f8e7122908e7caedca869075595",
}

local function jsonl(path)
  local rows = {}
  for line in io.lines(path) do rows[#rows + 1] = cjson.decode(line) end
  return rows
end

local function by_id(rows)
  local out = {}
  for _, r in ipairs(rows) do out[r.id] = r end
  return out
end

-- Run f with print silenced (the commands report on stdout).
local function quiet(f)
  local saved = _G.print
  _G.print = function() end
  local ok, a, b = pcall(f)
  _G.print = saved
  assert(ok, a)
  return a, b
end

describe("Debian description text", function()
  it("drops the leading space, joins lines, breaks paragraphs at ' .', keeps verbatim lines apart", function()
    local lines = {
      " First line of a paragraph",
      " that goes on here.",
      " .",
      " Features:",
      "  * one",
      "     * nested",
      " Back to prose",
      " continued.",
      " .",
      " .",
      " Last.  ",
    }
    assert.same({ "First line of a paragraph that goes on here.", "Features:\n* one\n* nested\nBack to prose continued.",
      "Last." }, debian.paragraphs(lines))
    assert.equal("First line of a paragraph that goes on here.\nFeatures:\n* one\n* nested\nBack to prose continued.\nLast.",
      debian.long_text(lines))
    assert.equal("", debian.long_text({}))
  end)

  it("finds Translation files of one language, plain or compressed, in name order", function()
    local names = {}
    for _, p in ipairs(debian.translation_files(APT, "en")) do names[#names + 1] = p:match("[^/]+$") end
    assert.same({ "deb.example.org_debian_dists_stable-updates_main_i18n_Translation-en.gz",
      "deb.example.org_debian_dists_stable_main_i18n_Translation-en" }, names)
    assert.equal(1, #debian.translation_files(APT, "de"))
    assert.equal(0, #debian.translation_files(APT, "fr"))
  end)

  it("says how to fetch missing languages without dropping present ones", function()
    assert.equal("apt-get update -o Acquire::Languages=fr,de,en,en_GB", debian.fetch_command(APT, { "fr" }))
    assert.has_no.errors(function() debian.ensure_translations(APT, { "en", "de" }, error) end)
    local ok, e = pcall(debian.ensure_translations, APT, { "fr" }, error)
    assert.is_false(ok)
    assert.matches("no Translation-fr files in " .. APT, e, 1, true)
  end)
end)

describe("debsum", function()
  local out
  before_each(function() out = files.tempdir() end)
  after_each(function() files.remove_tree(out) end)

  it("builds document/summary pairs, deduplicated, without too-short ones", function()
    local c = debian.debsum({ lists = APT, out = out })
    assert.same({ 3, 1, 1 }, { c.train, c.valid, c.test })
    assert.same({ 11, 2, 1, 3, 2 }, { c.stanzas, c.duplicates, c.malformed, c.too_short, c.files })
    local train = by_id(jsonl(out .. "/train.jsonl"))
    assert.same({ "alpha", "tabulate plain text" }, { train[MD5.alpha].package, train[MD5.alpha].summary })
    assert.equal("Alpha is a small tool that turns plain text files into tidy tables, with columns lined up and "
      .. "numbers aligned on the decimal point.\nFeatures:\n* reads CSV and TSV\n* writes Markdown\n"
      .. "This package contains the command-line program.", train[MD5.alpha].document)
    -- 20 words is enough, 19 is not
    assert.is_not_nil(train[MD5.zeta])
    assert.is_not_nil(train[MD5.iota]) -- from the .gz file
    assert.equal("compare two directories", jsonl(out .. "/valid.jsonl")[1].summary)
    assert.equal(MD5.gamma, jsonl(out .. "/test.jsonl")[1].id)
    for _, split in ipairs({ "train", "valid", "test" }) do
      for _, r in ipairs(jsonl(out .. "/" .. split .. ".jsonl")) do
        local n = 0
        for _ in r.document:gmatch("%S+") do n = n + 1 end
        assert.is_true(n >= 20)
      end
    end
  end)

  it("honours the word threshold and subsets", function()
    local c = debian.debsum({ lists = APT, out = out, min_words = 19, max_train = 2 })
    assert.same({ 2, 2 }, { c.too_short, c.train })
  end)

  it("splits by the hash of Description-md5, the same on every run", function()
    assert.equal("test", corpus.split_of(MD5.gamma))
    assert.equal("valid", corpus.split_of(MD5.delta))
    assert.equal("train", corpus.split_of(MD5.alpha))
    assert.equal(65, corpus.bucket(MD5.alpha))
    debian.debsum({ lists = APT, out = out })
    local again = files.tempdir()
    debian.debsum({ lists = APT, out = again })
    for _, split in ipairs({ "train", "valid", "test" }) do
      assert.equal(files.read(out .. "/" .. split .. ".jsonl"), files.read(again .. "/" .. split .. ".jsonl"))
    end
    files.remove_tree(again)
  end)

  it("writes JSON Lines dq.data reads back", function()
    debian.debsum({ lists = APT, out = out })
    local n = 0
    for _, src, tgt in dq.data.read.records(out .. "/train.jsonl", { source = "document", target = "summary" }) do
      assert.is_string(src)
      assert.is_string(tgt)
      n = n + 1
    end
    assert.equal(3, n)
  end)

  it("runs as `dqbart data debsum`", function()
    assert.equal(0, quiet(function() return cli.run({ "debsum", "--lists", APT, "--out", out }) end))
    assert.equal(3, #jsonl(out .. "/train.jsonl"))
    assert.equal(1, quiet(function() return cli.run({ "debsum", "--lists", out, "--out", out }) end))
  end)
end)

describe("debtrans", function()
  local out
  before_each(function() out = files.tempdir() end)
  after_each(function() files.remove_tree(out) end)

  it("joins English and German descriptions on Description-md5", function()
    local c = debian.debtrans({ lists = APT, out = out, lang = "de" })
    assert.same({ 2, 0, 1 }, { c.train, c.valid, c.test })
    assert.same({ 4, 1 }, { c.translated, c.untranslated })
    local train = by_id(jsonl(out .. "/train.jsonl"))
    local alpha = train[MD5.alpha].translation
    assert.equal("tabulate plain text\nAlpha is a small tool", alpha.en:sub(1, #"tabulate plain text\nAlpha is a small tool"))
    assert.equal("Klartext tabellieren\nAlpha ist ein kleines Werkzeug", alpha.de:sub(1, #"Klartext tabellieren\nAlpha ist ein kleines Werkzeug"))
    local pairs_read = {}
    for _, en, de in dq.data.read.records(out .. "/test.jsonl", { source = "translation.en", target = "translation.de" }) do
      pairs_read[#pairs_read + 1] = { en:match("^[^\n]*"), de:match("^[^\n]*") }
    end
    assert.same({ { "time the steps of a build", "die Schritte eines Bauvorgangs messen" } }, pairs_read)
  end)

  it("pairs paragraphs when both sides have as many", function()
    local c = debian.debtrans({ lists = APT, out = out, lang = "de", unit = "paragraph" })
    assert.same({ 4, 0, 2, 1 }, { c.train, c.valid, c.test, c.mismatched })
    local rows = jsonl(out .. "/train.jsonl")
    assert.same({ "Features:\n* reads CSV and TSV\n* writes Markdown", "Funktionen:\n* liest CSV und TSV\n* schreibt Markdown" },
      { rows[3].translation.en, rows[3].translation.de })
  end)
end)

describe("corpus JSON output", function()
  it("escapes like json.dumps(ensure_ascii=False) and repairs invalid UTF-8", function()
    assert.equal('"a\\"b\\\\c\\nd\\te\\u0001 ü"', corpus.json_string('a"b\\c\nd\te\1 ü'))
    assert.equal('"x\239\191\189y"', corpus.json_string("x\255y"))
    assert.equal('{"id": "1", "translation": {"en": "a", "de": "b"}}',
      corpus.json_object({ { "id", "1" }, { "translation", { { "en", "a" }, { "de", "b" } } } }))
    assert.equal('a"b\\c\nd\te\1 ü', cjson.decode(corpus.json_string('a"b\\c\nd\te\1 ü')))
  end)
end)

describe("committed corpus samples", function()
  for _, case in ipairs({ { "debsum", "document", "summary" }, { "debtrans", "translation.en", "translation.de" } }) do
    local name, source, target = case[1], case[2], case[3]
    it(name .. " has train/valid/test JSON Lines under 2 MB, each example in its split", function()
      local total = 0
      for _, split in ipairs(corpus.SPLITS) do
        local path = here .. "/fixtures/" .. name .. "/" .. split .. ".jsonl"
        total = total + #files.read(path)
        local n = 0
        for _, src, tgt in dq.data.read.records(path, { source = source, target = target }) do
          assert.is_true(#src > 0 and #tgt > 0)
          n = n + 1
        end
        assert.is_true(n > 0)
        for _, r in ipairs(jsonl(path)) do assert.equal(split, corpus.split_of(r.id:sub(1, 32))) end
      end
      assert.is_true(total < 2 * 2 ^ 20)
    end)
  end

  it("`dqbart data stats` describes a data file", function()
    local lines = {}
    local saved = _G.print
    _G.print = function(s) lines[#lines + 1] = s end
    local ok, code = pcall(cli.run, { "stats", here .. "/fixtures/debsum/valid.jsonl" })
    _G.print = saved
    assert.is_true(ok, code)
    assert.equal(0, code)
    assert.matches("valid.jsonl: 150 examples (jsonl)", lines[1], 1, true)
    assert.matches("^  source words:  mean [%d.]+, median %d+, p95 %d+, max %d+$", lines[2])
  end)

  it("`dqbart data debsum --sample` copies the committed sample", function()
    local out = files.tempdir()
    assert.equal(0, quiet(function() return cli.run({ "debsum", "--sample", "--out", out }) end))
    assert.equal(files.read(here .. "/fixtures/debsum/valid.jsonl"), files.read(out .. "/valid.jsonl"))
    files.remove_tree(out)
  end)
end)
