-- dqbart.data.cache: where the token cache of a data file lives and what
-- its key covers.
--
-- The key is XXH64 over a canonical text of everything the tokenized result
-- depends on: the data file's contents (hashed, not its name or date), the
-- tokenizer's files (hashed) and what it answers for probe strings, and the
-- settings (format, fields, header, limit, maximum lengths, encode
-- options). Any change gives another key and so another file name,
-- `<data file name>.<key>.dqcache`. It is written next to the data file;
-- when that directory cannot be written, into the cache directory
-- ($DQBART_CACHE_DIR, else $XDG_CACHE_HOME/dqbart/data, else
-- ~/.cache/dqbart/data). An explicit cache_dir is used alone.
local engine = require("dqbart.data_engine")

local M = {}

M.FORMAT_VERSION = "dqbart token cache 1"

-- Files of a Hugging Face tokenizer directory that decide its output.
M.TOKENIZER_FILES = {
  "tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json",
  "added_tokens.json", "sentencepiece.bpe.model", "spiece.model", "sentencepiece.model",
}

-- Probes whose encodings join the key: they catch a tokenizer that
-- behaves differently even when its files look the same.
local PROBES = { "Hello world, 2024.", "  Ünïcödé\ttabs\nnewlines <mask> ok", "" }

local function file_exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end
M.file_exists = file_exists

-- A stable text for a Lua value (sorted keys; numbers with full precision).
local function canonical(v)
  local t = type(v)
  if t == "table" then
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = k end
    table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
    local parts = {}
    for _, k in ipairs(keys) do parts[#parts + 1] = canonical(k) .. "=" .. canonical(v[k]) end
    return "{" .. table.concat(parts, ",") .. "}"
  elseif t == "string" then
    return ("%q"):format(v)
  elseif t == "number" then
    return v % 1 == 0 and ("%d"):format(v) or ("%.17g"):format(v)
  end
  return tostring(v)
end
M.canonical = canonical

local function dirname(path)
  return path:match("^(.*)/[^/]*$") or "."
end

local function basename(path)
  return path:match("([^/]*)$")
end

-- The tokenizer's part of the key. `files` overrides the file list; else
-- tok.files, else the known files in tok.dir (or tok.path).
function M.tokenizer_fingerprint(tok, files, encode_options)
  local parts = {}
  if not files then
    files = tok.files
    local dir = tok.dir or tok.path
    if not files and type(dir) == "string" then
      files = {}
      for _, name in ipairs(M.TOKENIZER_FILES) do
        local p = dir .. "/" .. name
        if file_exists(p) then files[#files + 1] = p end
      end
    end
  end
  local sorted = {}
  for _, p in ipairs(files or {}) do sorted[#sorted + 1] = p end
  table.sort(sorted, function(a, b) return basename(a) < basename(b) end)
  for _, p in ipairs(sorted) do parts[#parts + 1] = basename(p) .. " " .. engine.hash_file(p) end
  if tok.fingerprint ~= nil then
    local fp = tok.fingerprint
    if type(fp) == "function" then fp = fp(tok) end
    parts[#parts + 1] = "fingerprint " .. canonical(fp)
  end
  parts[#parts + 1] = "ids " .. canonical({ tok.vocab_size, tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id })
  for _, opts in ipairs(encode_options) do
    for _, probe in ipairs(PROBES) do
      local merged = {}
      for k, v in pairs(opts) do merged[k] = v end
      merged.special = true
      parts[#parts + 1] = "probe " .. canonical(tok:encode(probe, merged))
    end
  end
  return table.concat(parts, "\n")
end

-- settings: a table of everything else the result depends on.
function M.key(data_path, tokenizer_fingerprint, settings)
  local text = table.concat({
    M.FORMAT_VERSION,
    "data " .. engine.hash_file(data_path),
    "tokenizer\n" .. tokenizer_fingerprint,
    "settings " .. canonical(settings),
  }, "\n")
  return engine.hash(text)
end

function M.default_dir()
  local env = os.getenv("DQBART_CACHE_DIR")
  if env and env ~= "" then return env end
  local xdg = os.getenv("XDG_CACHE_HOME")
  if xdg and xdg ~= "" then return xdg .. "/dqbart/data" end
  return (os.getenv("HOME") or "/tmp") .. "/.cache/dqbart/data"
end

local function shell_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

-- The places a cache for (data_path, key) is looked for, in order, and
-- written to (the first that takes it).
function M.candidates(data_path, key, cache_dir)
  local name = basename(data_path) .. "." .. key .. ".dqcache"
  if cache_dir then return { cache_dir .. "/" .. name } end
  return { dirname(data_path) .. "/" .. name, M.default_dir() .. "/" .. name }
end

-- Returns store, path, notes (a list of problems met, e.g. a damaged
-- file) or nil, nil, notes.
function M.load(paths, key)
  local notes = {}
  for _, path in ipairs(paths) do
    if file_exists(path) then
      local store, message, code = engine.cache_load(path, key)
      if store then return store, path, notes end
      notes[#notes + 1] = message .. (code == engine.ERR_FORMAT and "; rebuilding it" or "")
    end
  end
  return nil, nil, notes
end

-- Write to the first path that takes it; returns that path, or nil and the
-- reasons.
function M.save(paths, key, store)
  local reasons = {}
  for _, path in ipairs(paths) do
    local dir = dirname(path)
    if not file_exists(dir) then os.execute("mkdir -p " .. shell_quote(dir) .. " 2>/dev/null") end
    local ok, err = pcall(engine.cache_save, path, key, store)
    if ok then return path end
    reasons[#reasons + 1] = tostring(err)
  end
  return nil, table.concat(reasons, "; ")
end

return M
