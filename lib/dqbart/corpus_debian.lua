-- dqbart.corpus_debian: summarization and translation corpora from the
-- package descriptions in Debian's archive, which every Debian machine can
-- fetch with apt (no other download).
--
-- apt's Translation-<lang> files (/var/lib/apt/lists/*_i18n_Translation-<lang>,
-- plain or .lz4/.xz/.gz/...) hold stanzas
--     Package: 0ad
--     Description-md5: d943033bedada21853d2ae54a2578a7b
--     Description-en: Real-time strategy game of ancient warfare      <- synopsis
--      0 A.D. (pronounced "zero ey-dee") is a free, open-source, ...    <- long description
--      .                                                               <- paragraph break
--       * a verbatim line (two leading spaces), e.g. a list item
-- and Description-md5 (the md5 of the English description) is the same in
-- every language, which joins translations to their English original.
--
-- Long description text (Debian policy 5.6.13): the single leading space of
-- each line is removed; lines of a paragraph are joined with spaces; a
-- " ." line ends a paragraph (paragraphs are joined with "\n"); a line with
-- more leading whitespace is verbatim and stays on its own line (its
-- indentation dropped).
--
-- debsum: document = long description, summary = synopsis. Descriptions
--   whose long part has fewer than MIN_WORDS (20) words are dropped: a
--   one-line description has nothing to summarize, and below ~20 words the
--   synopsis mostly repeats the text. Deduplicated by Description-md5 (the
--   first file in name order wins).
-- debtrans: pairs (translation.en, translation.<lang>) of whole descriptions
--   (synopsis, "\n", long description) joined on Description-md5; pairs
--   whose translation equals the English text are dropped. With unit =
--   "paragraph" each description gives one pair per paragraph (the
--   synopsis first) when both sides have the same number of paragraphs.
-- Splits: by the hash of the Description-md5 (dqbart.corpus.split_of):
--   98% train, 1% valid, 1% test, stable across archive updates and the
--   same in both corpora.
local corpus = require("dqbart.corpus")
local engine = require("dqbart.data_engine")

local M = {}

M.LISTS_DIR = "/var/lib/apt/lists"
M.MIN_WORDS = 20
M.COMPRESSIONS = { lz4 = true, xz = true, gz = true, bz2 = true, zst = true, lzma = true }

-- ---- finding and fetching the Translation files ----------------------------------

function M.translation_files(dir, lang)
  local tail = "_i18n_Translation-" .. lang
  local out = {}
  for _, name in ipairs(corpus.list_dir(dir)) do
    local at = name:find(tail, 1, true)
    if at then
      local rest = name:sub(at + #tail)
      if rest == "" or (rest:sub(1, 1) == "." and M.COMPRESSIONS[rest:sub(2)]) then
        out[#out + 1] = dir .. "/" .. name
      end
    end
  end
  return out
end

-- The languages with Translation files in dir (so a fetch keeps them:
-- apt deletes the lists of languages it is not asked for).
function M.present_languages(dir)
  local langs, seen = {}, {}
  for _, name in ipairs(corpus.list_dir(dir)) do
    local lang = name:match("_i18n_Translation%-([%w_@]+)")
    if lang and not seen[lang] then
      seen[lang] = true
      langs[#langs + 1] = lang
    end
  end
  table.sort(langs)
  return langs
end

function M.fetch_command(dir, langs)
  local all, seen = {}, {}
  for _, list in ipairs({ langs, M.present_languages(dir) }) do
    for _, l in ipairs(list) do
      if not seen[l] then seen[l] = true; all[#all + 1] = l end
    end
  end
  return "apt-get update -o Acquire::Languages=" .. table.concat(all, ",")
end

local function is_root()
  local p = io.popen("id -u 2>/dev/null")
  local uid = p and p:read("*l")
  if p then p:close() end
  return uid == "0"
end

local function names(langs)
  local out = {}
  for i, l in ipairs(langs) do out[i] = "Translation-" .. l end
  return table.concat(out, " and ")
end

-- Make sure Translation files for every language exist in dir. In apt's
-- own directory, as root, fetch them; else fail with the command to run.
function M.ensure_translations(dir, langs, log)
  local missing = {}
  for _, lang in ipairs(langs) do
    if #M.translation_files(dir, lang) == 0 then missing[#missing + 1] = lang end
  end
  if #missing == 0 then return end
  if dir ~= M.LISTS_DIR then
    error(("no %s files in %s"):format(names(missing), dir), 0)
  end
  local command = M.fetch_command(dir, langs)
  if not is_root() then
    error(("no %s files in %s; fetch them as root with:\n  %s"):format(names(missing), dir, command), 0)
  end
  log(("no %s files in %s; running: %s"):format(names(missing), dir, command))
  if os.execute(command .. " >&2") ~= 0 then error(("`%s` failed"):format(command), 0) end
  for _, lang in ipairs(missing) do
    if #M.translation_files(dir, lang) == 0 then
      error(("`%s` ran but %s still has no Translation-%s file (is the language in the archive?)"):format(
        command, dir, lang), 0)
    end
  end
end

-- ---- parsing ---------------------------------------------------------------------------

local function trim(s) return (s:gsub("^%s+", ""):gsub("%s+$", "")) end

-- The paragraphs of a long description (list of raw lines, each starting
-- with a space) as a list of strings.
function M.paragraphs(lines)
  local paragraphs, current, verbatim_last = {}, {}, false
  local function flush()
    if #current > 0 then paragraphs[#paragraphs + 1] = table.concat(current, "\n") end
    current, verbatim_last = {}, false
  end
  for _, raw in ipairs(lines) do
    local text = raw:sub(2)
    if trim(text) == "." then
      flush()
    elseif text:match("^%s") then
      local t = trim(text)
      if t ~= "" then current[#current + 1] = t end
      verbatim_last = true
    else
      local t = trim(text)
      if t ~= "" then
        if #current > 0 and not verbatim_last then
          current[#current] = current[#current] .. " " .. t
        else
          current[#current + 1] = t
        end
        verbatim_last = false
      end
    end
  end
  flush()
  return paragraphs
end

function M.long_text(lines)
  return table.concat(M.paragraphs(lines), "\n")
end

-- Read the descriptions of `lang` from the files into an ordered,
-- md5-deduplicated set: { order = {md5...}, by_md5 = {md5 -> entry} } with
-- entry = { package, md5, synopsis, lines }. stats counts stanzas read,
-- duplicates and malformed ones.
function M.read_descriptions(files, lang, stats)
  local field = "Description-" .. lang
  local set = { order = {}, by_md5 = {} }
  stats = stats or {}
  stats.stanzas, stats.duplicates, stats.malformed = stats.stanzas or 0, stats.duplicates or 0, stats.malformed or 0
  for _, path in ipairs(files) do
    local entry, in_description = {}, false
    local function finish()
      if entry.synopsis or entry.md5 then
        stats.stanzas = stats.stanzas + 1
        if not (entry.synopsis and entry.md5 and entry.md5:match("^%x+$") and #entry.md5 == 32) then
          stats.malformed = stats.malformed + 1
        elseif set.by_md5[entry.md5] then
          stats.duplicates = stats.duplicates + 1
        else
          set.by_md5[entry.md5] = entry
          set.order[#set.order + 1] = entry.md5
        end
      end
      entry, in_description = {}, false
    end
    corpus.each_line(path, function(line)
      if line == "" then return finish() end
      local c = line:sub(1, 1)
      if c == " " or c == "\t" then
        if in_description then entry.lines[#entry.lines + 1] = line end
        return
      end
      in_description = false
      local key, value = line:match("^([^:%s]+):%s*(.-)%s*$")
      if key == "Package" then
        entry.package = value
      elseif key == "Description-md5" then
        entry.md5 = value:lower()
      elseif key == field then
        entry.synopsis, entry.lines, in_description = value, {}, true
      end
    end)
    finish()
  end
  return set, stats
end

-- ---- building ----------------------------------------------------------------------------

local function word_count(s)
  local n = 0
  for _ in s:gmatch("%S+") do n = n + 1 end
  return n
end

-- Keep at most `max` records per split: those whose id hashes lowest (a
-- stable random subset), in their original order.
local function subset(records, max)
  if not max or #records <= max then return records end
  local ranked = {}
  for i, r in ipairs(records) do ranked[i] = { engine.hash(r.id, 1), i } end
  table.sort(ranked, function(a, b) return a[1] < b[1] end)
  local keep = {}
  for i = 1, max do keep[ranked[i][2]] = true end
  local out = {}
  for i, r in ipairs(records) do if keep[i] then out[#out + 1] = r end end
  return out
end

local function write_splits(out_dir, by_split, opts)
  corpus.mkdir_p(out_dir)
  local counts = {}
  for _, split in ipairs(corpus.SPLITS) do
    local max = split == "train" and opts.max_train or opts.max_eval
    local records = subset(by_split[split], max)
    local lines = {}
    for i, r in ipairs(records) do lines[i] = r.fields end
    corpus.write_jsonl(out_dir .. "/" .. split .. ".jsonl", lines)
    counts[split] = #records
  end
  return counts
end

local function files_for(opts, lang)
  local dir = opts.lists or M.LISTS_DIR
  local log = opts.log or function() end
  if not opts.files then M.ensure_translations(dir, { lang }, log) end
  return (opts.files and opts.files[lang]) or M.translation_files(dir, lang)
end

-- opts: out (directory), lists (default /var/lib/apt/lists), files
-- ({ en = {paths} } instead of searching lists), min_words, max_train,
-- max_eval (subsets), log. Returns counts: train, valid, test, stanzas,
-- duplicates, malformed, too_short, files.
function M.debsum(opts)
  local files = files_for(opts, "en")
  local set, stats = M.read_descriptions(files, "en")
  local min_words = opts.min_words or M.MIN_WORDS
  local by_split = { train = {}, valid = {}, test = {} }
  stats.too_short = 0
  for _, md5 in ipairs(set.order) do
    local e = set.by_md5[md5]
    local document, summary = M.long_text(e.lines), trim(e.synopsis)
    if word_count(document) < min_words or summary == "" then
      stats.too_short = stats.too_short + 1
    else
      local list = by_split[corpus.split_of(md5)]
      list[#list + 1] = { id = md5, fields = {
        { "id", md5 }, { "package", e.package or "" }, { "document", document }, { "summary", summary },
      } }
    end
  end
  local counts = write_splits(opts.out, by_split, opts)
  for k, v in pairs(stats) do counts[k] = v end
  counts.files = #files
  return counts
end

local function full_text(e)
  local long = M.long_text(e.lines)
  local synopsis = trim(e.synopsis)
  return long ~= "" and (synopsis .. "\n" .. long) or synopsis
end

-- opts: lang (default "de"), unit ("description" or "paragraph"), and
-- those of debsum (files = { en = {...}, de = {...} }). Returns counts:
-- train, valid, test, english, translated (descriptions in both),
-- untranslated (identical texts), mismatched (paragraph counts differ).
function M.debtrans(opts)
  local lang = opts.lang or "de"
  if lang == "en" then error("debtrans: --lang must be a language other than en", 0) end
  local unit = opts.unit or "description"
  if unit ~= "description" and unit ~= "paragraph" then
    error(("debtrans: unit must be 'description' or 'paragraph', got %s"):format(tostring(unit)), 0)
  end
  local en_files = files_for(opts, "en")
  local xx_files = files_for(opts, lang)
  local en = M.read_descriptions(en_files, "en")
  local xx, xx_stats = M.read_descriptions(xx_files, lang)
  local by_split = { train = {}, valid = {}, test = {} }
  local counts = { english = #en.order, translations = #xx.order, translated = 0, untranslated = 0, mismatched = 0,
    duplicates = xx_stats.duplicates, malformed = xx_stats.malformed }
  local seen_pairs = {}
  local function add(md5, id, package, en_text, xx_text)
    local pair_key = en_text .. "\0" .. xx_text
    if seen_pairs[pair_key] then return end
    seen_pairs[pair_key] = true
    local list = by_split[corpus.split_of(md5)]
    list[#list + 1] = { id = id, fields = {
      { "id", id }, { "package", package or "" }, { "translation", { { "en", en_text }, { lang, xx_text } } },
    } }
  end
  for _, md5 in ipairs(en.order) do
    local e, x = en.by_md5[md5], xx.by_md5[md5]
    if x then
      counts.translated = counts.translated + 1
      local en_text, xx_text = full_text(e), full_text(x)
      if en_text == xx_text or xx_text == "" then
        counts.untranslated = counts.untranslated + 1
      elseif unit == "description" then
        add(md5, md5, e.package, en_text, xx_text)
      else
        local ep, xp = M.paragraphs(e.lines), M.paragraphs(x.lines)
        if #ep ~= #xp then
          counts.mismatched = counts.mismatched + 1
        else
          add(md5, md5 .. "-0", e.package, trim(e.synopsis), trim(x.synopsis))
          for k = 1, #ep do
            if ep[k] ~= xp[k] then add(md5, md5 .. "-" .. k, e.package, ep[k], xp[k]) end
          end
        end
      end
    end
  end
  local written = write_splits(opts.out, by_split, opts)
  for k, v in pairs(written) do counts[k] = v end
  counts.files = #en_files + #xx_files
  return counts
end

return M
