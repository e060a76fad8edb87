-- dqbart.data.read: source/target text pairs from JSON Lines and TSV files.
--
--   local r = read.open("train.jsonl", { source = "document", target = "summary" })
--   local chunk = r:next_chunk(1000)   -- { sources = {...}, targets = {...}, lines = {...} } or nil
--   r:close()
--   for line, src, tgt in read.records(path, opts) do ... end
--
-- Options:
--   format  "jsonl" or "tsv"; by default from the extension (.jsonl, .json,
--           .ndjson, .jsonlines -> jsonl; .tsv, .tab -> tsv)
--   source  JSON: a field name; dots reach into nested objects
--           ("translation.en") and numbers into arrays, 0-based as in
--           Python ("answers.text.0"); a key that itself contains dots is
--           tried whole first. TSV: a 1-based column number or a header name.
--   target  the same, or nil for source-only data (generation)
--   header  TSV: whether the first line names the columns (default: true
--           when a column is given by name, else false)
--   limit   read at most this many examples
--
-- Blank lines are skipped. Any other bad line stops reading with an error
-- "FILE:LINE: what is wrong". JSON values must be strings; TSV fields are
-- taken verbatim (no quoting or escapes), a trailing \r is dropped.
-- lua-cjson (Debian: lua-cjson) parses JSON at about 200 MB/s, far faster
-- than tokenizing; loaded on first use so dq works without it.
local cjson

local function load_cjson()
  if cjson then return end
  local ok, mod = pcall(require, "cjson")
  if not ok then
    error("reading JSON Lines needs lua-cjson (apt-get install lua-cjson, or luarocks install lua-cjson)", 0)
  end
  cjson = mod.new()
end

local M = {}

local JSON_EXTENSIONS = { jsonl = true, json = true, ndjson = true, jsonlines = true }
local TSV_EXTENSIONS = { tsv = true, tab = true }

function M.detect_format(path)
  local ext = (path:match("%.([%w]+)$") or ""):lower()
  if JSON_EXTENSIONS[ext] then return "jsonl" end
  if TSV_EXTENSIONS[ext] then return "tsv" end
  return nil
end

local function fail(r, line, fmt, ...)
  error(("%s:%d: " .. fmt):format(r.path, line, ...), 0)
end

-- "a string", "an array", "null", ... for messages.
local function json_kind(v)
  if v == cjson.null then return "null" end
  local t = type(v)
  if t == "table" then
    if next(v) == nil then return "an empty object" end
    return v[1] ~= nil and "an array" or "an object"
  end
  return "a " .. t
end

local function sorted_keys(obj)
  local keys = {}
  for k in pairs(obj) do keys[#keys + 1] = tostring(k) end
  table.sort(keys)
  return table.concat(keys, ", ")
end

-- A function(obj) -> value, or nil, the prefix that exists, the value there.
local function json_getter(path)
  local parts = {}
  for part in path:gmatch("[^.]+") do parts[#parts + 1] = part end
  return function(obj)
    local whole = obj[path]
    if whole ~= nil then return whole end
    local v, walked = obj, nil
    for _, part in ipairs(parts) do
      if type(v) ~= "table" then return nil, walked, v end
      local nextv = v[part]
      local index = tonumber(part)
      if nextv == nil and index and index % 1 == 0 and v[1] ~= nil then nextv = v[index + 1] end
      if nextv == nil then return nil, walked, v end
      v = nextv
      walked = walked and (walked .. "." .. part) or part
    end
    return v
  end
end

local function json_field(r, line, obj, getter, name)
  local v, walked, at = getter(obj)
  if v == nil then
    if type(at) ~= "table" then
      fail(r, line, "no field '%s': '%s' is %s", name, walked, json_kind(at))
    elseif at[1] ~= nil then
      fail(r, line, "no field '%s': '%s' is an array of %d (indices are 0-based)", name, walked, #at)
    end
    fail(r, line, "no field '%s' (keys%s: %s)", name, walked and (" of '" .. walked .. "'") or "", sorted_keys(at))
  end
  if type(v) ~= "string" then fail(r, line, "field '%s' is %s; expected a string", name, json_kind(v)) end
  return v
end

local function parse_jsonl(r, text, line)
  local ok, obj = pcall(cjson.decode, text)
  if not ok then fail(r, line, "invalid JSON: %s", tostring(obj)) end
  if type(obj) ~= "table" or obj[1] ~= nil then
    fail(r, line, "expected a JSON object per line, got %s", json_kind(obj))
  end
  local src = json_field(r, line, obj, r.source_get, r.source)
  local tgt = r.target and json_field(r, line, obj, r.target_get, r.target) or nil
  return src, tgt
end

local function split_tabs(text)
  local fields, pos = {}, 1
  while true do
    local tab = text:find("\t", pos, true)
    if not tab then
      fields[#fields + 1] = text:sub(pos)
      return fields
    end
    fields[#fields + 1] = text:sub(pos, tab - 1)
    pos = tab + 1
  end
end

local function column_of(r, spec, header, line)
  if type(spec) == "number" then
    if spec < 1 or spec % 1 ~= 0 then error(("%s: TSV columns are 1-based numbers, got %s"):format(r.path, spec), 0) end
    return spec
  end
  for i, name in ipairs(header or {}) do if name == spec then return i end end
  if not header then
    error(("%s: column '%s' is given by name but the file is read without a header (header = false)"):format(
      r.path, spec), 0)
  end
  fail(r, line, "no column named '%s' in the header (columns: %s)", spec, table.concat(header, ", "))
end

local function parse_tsv(r, text, line)
  local fields = split_tabs(text)
  if #fields < r.columns_needed then
    fail(r, line, "expected at least %d tab-separated columns, found %d", r.columns_needed, #fields)
  end
  return fields[r.source_col], r.target_col and fields[r.target_col] or nil
end

local Reader = {}
Reader.__index = Reader

function M.open(path, opts)
  opts = opts or {}
  local format = opts.format or M.detect_format(path)
  if format ~= "jsonl" and format ~= "tsv" then
    error(("%s: cannot tell the format from the name; set format = 'jsonl' or 'tsv'"):format(path), 0)
  end
  if opts.source == nil then error(("%s: no source field given"):format(path), 0) end
  if format == "jsonl" then load_cjson() end
  local f, err = io.open(path, "rb")
  if not f then error(("cannot open data file %s"):format(err), 0) end
  local r = setmetatable({
    path = path, file = f, format = format, line = 0, count = 0, limit = opts.limit,
    source = opts.source, target = opts.target,
  }, Reader)
  if format == "jsonl" then
    for _, key in ipairs({ "source", "target" }) do
      if r[key] ~= nil and type(r[key]) ~= "string" then
        error(("%s: JSON fields are names (got %s %s)"):format(path, key, tostring(r[key])), 0)
      end
    end
    r.source_get = json_getter(r.source)
    r.target_get = r.target and json_getter(r.target)
    r.parse = parse_jsonl
  else
    local header = opts.header
    if header == nil then header = type(r.source) == "string" or type(r.target) == "string" end
    local names
    if header then
      local first = r:read_line()
      if not first then error(("%s: the file is empty but a header line was expected"):format(path), 0) end
      names = split_tabs(first)
    end
    r.source_col = column_of(r, r.source, names, 1)
    r.target_col = r.target and column_of(r, r.target, names, 1)
    r.columns_needed = math.max(r.source_col, r.target_col or 0)
    r.parse = parse_tsv
  end
  return r
end

-- The next physical line without its end of line (\n or \r\n), or nil.
function Reader:read_line()
  local text = self.file:read("*l")
  if text == nil then return nil end
  self.line = self.line + 1
  if self.line == 1 and text:sub(1, 3) == "\239\187\191" then text = text:sub(4) end
  if text:sub(-1) == "\r" then text = text:sub(1, -2) end
  return text
end

-- Up to max_records examples (and not much more than max_bytes of text):
-- { sources = {...}, targets = {...} (nil without a target), lines = {...} },
-- or nil at the end of the file (or of the limit).
function Reader:next_chunk(max_records, max_bytes)
  max_bytes = max_bytes or math.huge
  local sources, targets, lines, bytes = {}, self.target and {} or nil, {}, 0
  while #sources < max_records and bytes < max_bytes do
    if self.limit and self.count >= self.limit then break end
    local text = self:read_line()
    if text == nil then break end
    if text:find("%S") then
      local src, tgt = self.parse(self, text, self.line)
      local n = #sources + 1
      sources[n], lines[n] = src, self.line
      if targets then targets[n] = tgt end
      bytes = bytes + #src + (tgt and #tgt or 0)
      self.count = self.count + 1
    end
  end
  if #sources == 0 then return nil end
  return { sources = sources, targets = targets, lines = lines }
end

function Reader:close()
  if self.file then self.file:close() end
  self.file = nil
end

-- Iterate line, source, target over a whole file.
function M.records(path, opts)
  local r = M.open(path, opts)
  local chunk, i = nil, 0
  return function()
    if not chunk or i >= #chunk.sources then
      chunk, i = r:next_chunk(1024), 0
      if not chunk then r:close(); return nil end
    end
    i = i + 1
    return chunk.lines[i], chunk.sources[i], chunk.targets and chunk.targets[i]
  end
end

return M
