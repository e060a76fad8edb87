-- dqbart data: corpora from Debian's package descriptions and a look at
-- data files.
--   dqbart data debsum --out DIR          summarization (document, summary)
--   dqbart data debtrans --lang de --out DIR   translation pairs
--   dqbart data stats FILE --source F --target F [--tokenizer DIR]
local args = require("dqbart.cli.args")

local M = {
  summary = "Build corpora from Debian's package descriptions (debsum, debtrans); describe data files (stats).",
}

local SUBCOMMANDS = {
  { "debsum", "summarization corpus: long package description -> synopsis (JSON Lines)" },
  { "debtrans", "translation corpus: English descriptions paired with another language's" },
  { "stats", "examples and length statistics of a JSON Lines or TSV file" },
}

local function usage()
  local lines = { "usage: dqbart data SUBCOMMAND [options]", "", M.summary, "", "subcommands:" }
  for _, s in ipairs(SUBCOMMANDS) do lines[#lines + 1] = ("  %-10s %s"):format(s[1], s[2]) end
  lines[#lines + 1] = "\ndqbart data SUBCOMMAND --help shows its options."
  return table.concat(lines, "\n")
end

-- The source tree's root (the committed samples live in spec/fixtures).
local function source_root()
  local here = debug.getinfo(1, "S").source:match("^@(.*)$") or ""
  return here:match("^(.*)/lib/dqbart/cli/data%.lua$")
end

local function copy_file(from, to)
  local f = assert(io.open(from, "rb"))
  local text = f:read("*a")
  f:close()
  local tmp = to .. ".tmp"
  local g, err = io.open(tmp, "wb")
  if not g then error(("cannot write %s"):format(err), 0) end
  g:write(text)
  g:close()
  assert(os.rename(tmp, to))
  local n = 0
  for _ in text:gmatch("\n") do n = n + 1 end
  return n
end

local function copy_sample(name, out)
  local root = source_root()
  local dir = root and (root .. "/spec/fixtures/" .. name)
  local probe = dir and io.open(dir .. "/train.jsonl", "rb")
  if probe then probe:close() end
  if not probe then
    io.stderr:write(("dqbart data %s: the committed sample lives in the source tree (spec/fixtures/%s), "
      .. "which this installation does not have\n"):format(name, name))
    return 1
  end
  local corpus = require("dqbart.corpus")
  corpus.mkdir_p(out)
  local counts = {}
  for _, split in ipairs(corpus.SPLITS) do
    counts[#counts + 1] = ("%s %d"):format(split, copy_file(dir .. "/" .. split .. ".jsonl", out .. "/" .. split .. ".jsonl"))
  end
  print(("%s sample (from %s) in %s: %s"):format(name, dir, out, table.concat(counts, ", ")))
  return 0
end

local function log(message) io.stderr:write("dqbart data: ", message, "\n") end

local COMMON = {
  { "--out", metavar = "DIR", help = "where train.jsonl, valid.jsonl and test.jsonl go", required = true },
  { "--lists", metavar = "DIR", help = "apt's lists directory", default = "/var/lib/apt/lists" },
  { "--max-train", metavar = "N", type = "number", help = "keep at most N training examples (a stable random subset)" },
  { "--max-eval", metavar = "N", type = "number", help = "keep at most N validation and N test examples" },
  { "--sample", flag = true, help = "copy the small committed sample instead (machines without apt)" },
}

local function options(extra)
  local out = {}
  for _, o in ipairs(extra) do out[#out + 1] = o end
  for _, o in ipairs(COMMON) do out[#out + 1] = o end
  return out
end

local function print_counts(kind, out, c)
  print(("%s: %s/train.jsonl %d, valid.jsonl %d, test.jsonl %d examples"):format(kind, out, c.train, c.valid, c.test))
end

local function debsum(argv)
  local opts, code = args.parse(argv, {
    command = "data debsum",
    summary = "Summarization pairs from apt's Translation-en files: document = the long description "
      .. "(paragraphs on separate lines), summary = the one-line synopsis. Deduplicated by Description-md5, "
      .. "split 98/1/1 by its hash. Missing files are fetched with apt-get update when run as root.",
    options = options({
      { "--min-words", metavar = "N", type = "number", default = 20,
        help = "drop descriptions whose long part has fewer words" },
    }),
  })
  if not opts then return code end
  if opts.sample then return copy_sample("debsum", opts.out) end
  local c = require("dqbart.corpus_debian").debsum({
    out = opts.out, lists = opts.lists, min_words = opts.min_words, max_train = opts.max_train,
    max_eval = opts.max_eval, log = log,
  })
  print_counts("debsum", opts.out, c)
  print(("  from %d Translation-en file(s): %d descriptions, %d duplicates (same Description-md5), "
    .. "%d with fewer than %d words dropped, %d malformed"):format(c.files, c.stanzas, c.duplicates, c.too_short,
    opts.min_words, c.malformed))
  return 0
end

local function debtrans(argv)
  local opts, code = args.parse(argv, {
    command = "data debtrans",
    summary = "Translation pairs (translation.en, translation.LANG) from apt's Translation-en and "
      .. "Translation-LANG files joined on Description-md5; split 98/1/1 by its hash, as debsum.",
    options = options({
      { "--lang", metavar = "LANG", default = "de", help = "the other language (a Translation-LANG file)" },
      { "--unit", metavar = "UNIT", default = "description", choices = { "description", "paragraph" },
        help = "one pair per description, or per paragraph where both have as many" },
    }),
  })
  if not opts then return code end
  if opts.sample then return copy_sample("debtrans", opts.out) end
  local c = require("dqbart.corpus_debian").debtrans({
    out = opts.out, lists = opts.lists, lang = opts.lang, unit = opts.unit, max_train = opts.max_train,
    max_eval = opts.max_eval, log = log,
  })
  print_counts("debtrans en-" .. opts.lang, opts.out, c)
  print(("  %d English descriptions, %d %s ones, %d joined, %d left untranslated%s"):format(c.english,
    c.translations, opts.lang, c.translated, c.untranslated,
    opts.unit == "paragraph" and (", %d with other paragraph counts"):format(c.mismatched) or ""))
  return 0
end

local function quantiles(values)
  table.sort(values)
  local n = #values
  if n == 0 then return "no examples" end
  local sum = 0
  for _, v in ipairs(values) do sum = sum + v end
  local function q(p) return values[math.max(1, math.ceil(p * n))] end
  return ("mean %.1f, median %d, p95 %d, max %d"):format(sum / n, q(0.5), q(0.95), values[n])
end

local function stats(argv)
  local opts, code = args.parse(argv, {
    command = "data stats",
    summary = "Count the examples of a data file and describe their lengths in words (and in tokens "
      .. "with --tokenizer).",
    options = {
      { "--source", metavar = "FIELD", default = "document", help = "source field (TSV: column number or name)" },
      { "--target", metavar = "FIELD", default = "summary", help = "target field ('' for none)" },
      { "--format", metavar = "FMT", choices = { "jsonl", "tsv" }, help = "default: from the extension" },
      { "--tokenizer", metavar = "DIR", help = "also count tokens (with special tokens)" },
      { "--max-source-length", metavar = "N", type = "number", default = 1024 },
      { "--max-target-length", metavar = "N", type = "number", default = 128 },
    },
    positional = { metavar = "FILE", min = 1, max = 1 },
  })
  if not opts then return code end
  local path = opts.positional[1]
  local field = function(v) return tonumber(v) or v end
  local target = opts.target ~= "" and field(opts.target) or nil
  local reader = require("dqbart.data.read").open(path, { format = opts.format, source = field(opts.source),
    target = target })
  local tok = opts.tokenizer and require("dqbart.tokenizer").load(opts.tokenizer)
  local sw, tw, st, tt = {}, {}, {}, {}
  local function words(s)
    local n = 0
    for _ in s:gmatch("%S+") do n = n + 1 end
    return n
  end
  while true do
    local chunk = reader:next_chunk(2048)
    if not chunk then break end
    for i, s in ipairs(chunk.sources) do
      sw[#sw + 1] = words(s)
      if chunk.targets then tw[#tw + 1] = words(chunk.targets[i]) end
    end
    if tok then
      for _, ids in ipairs(tok:encode_batch(chunk.sources, { special = true })) do st[#st + 1] = #ids end
      if chunk.targets then
        for _, ids in ipairs(tok:encode_batch(chunk.targets, { special = true })) do tt[#tt + 1] = #ids end
      end
    end
  end
  reader:close()
  local function over(list, limit)
    local n = 0
    for _, v in ipairs(list) do if v > limit then n = n + 1 end end
    return n
  end
  print(("%s: %d examples (%s)"):format(path, #sw, reader.format))
  print(("  source words:  %s"):format(quantiles(sw)))
  if target then print(("  target words:  %s"):format(quantiles(tw))) end
  if tok then
    print(("  source tokens: %s; %d longer than %d"):format(quantiles(st), over(st, opts.max_source_length),
      opts.max_source_length))
    if target then
      print(("  target tokens: %s; %d longer than %d"):format(quantiles(tt), over(tt, opts.max_target_length),
        opts.max_target_length))
    end
  end
  return 0
end

local RUN = { debsum = debsum, debtrans = debtrans, stats = stats }

function M.run(argv)
  local sub = argv[1]
  if sub == nil or sub == "--help" or sub == "-h" then
    print(usage())
    return sub and 0 or 2
  end
  local fn = RUN[sub]
  if not fn then
    io.stderr:write(("dqbart data: unknown subcommand '%s'\n\n%s\n"):format(sub, usage()))
    return 2
  end
  local rest = {}
  for i = 2, #argv do rest[#rest + 1] = argv[i] end
  local ok, result = pcall(fn, rest)
  if not ok then
    io.stderr:write("dqbart data ", sub, ": ", tostring(result), "\n")
    return 1
  end
  return result
end

return M
