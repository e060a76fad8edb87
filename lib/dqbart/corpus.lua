-- dqbart.corpus: what corpus builders share: deterministic splits by hash,
-- JSON Lines output (as Python's json.dumps(..., ensure_ascii=False)
-- writes it), reading plain or compressed text files.
local engine = require("dqbart.data_engine")

local M = {}

-- ---- splits ------------------------------------------------------------------

-- Per 100 examples: bucket 0 is test, 1 is valid, 2..99 train (98/1/1).
M.SPLITS = { "train", "valid", "test" }

-- The bucket (0..99) of an id: XXH64 of the id (seed 0), its top 32 bits
-- modulo 100. Depends on the id alone, so an example keeps its split when
-- the corpus grows or shrinks, and the same id lands in the same split in
-- every corpus built from it.
function M.bucket(id)
  return tonumber(engine.hash(id):sub(1, 8), 16) % 100
end

function M.split_of(id)
  local b = M.bucket(id)
  if b == 0 then return "test" elseif b == 1 then return "valid" end
  return "train"
end

-- ---- JSON Lines output -------------------------------------------------------------

local ESCAPES = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f", ["\n"] = "\\n", ["\r"] = "\\r",
  ["\t"] = "\\t" }

-- Valid UTF-8 stays as it is; each invalid byte becomes U+FFFD, so the
-- output is always valid UTF-8 JSON.
local function valid_utf8(s)
  if not s:find("[\128-\255]") then return s end
  local out, i, n = {}, 1, #s
  while i <= n do
    local c = s:byte(i)
    local len = c < 0x80 and 1 or (c >= 0xC2 and c <= 0xDF) and 2 or (c >= 0xE0 and c <= 0xEF) and 3
      or (c >= 0xF0 and c <= 0xF4) and 4 or 0
    local ok = len > 0 and i + len - 1 <= n
    if ok and len > 1 then
      for k = i + 1, i + len - 1 do
        local b = s:byte(k)
        if b < 0x80 or b > 0xBF then ok = false; break end
      end
      local c2 = s:byte(i + 1)
      if ok and ((c == 0xE0 and c2 < 0xA0) or (c == 0xED and c2 > 0x9F) or (c == 0xF0 and c2 < 0x90)
        or (c == 0xF4 and c2 > 0x8F)) then ok = false end
    end
    if ok then
      out[#out + 1] = s:sub(i, i + len - 1)
      i = i + len
    else
      out[#out + 1] = "\239\191\189"
      i = i + 1
    end
  end
  return table.concat(out)
end
M.valid_utf8 = valid_utf8

local function json_string(s)
  s = valid_utf8(s):gsub('[%c"\\]', function(c)
    return ESCAPES[c] or ("\\u%04x"):format(c:byte())
  end)
  return '"' .. s .. '"'
end
M.json_string = json_string

-- fields: a list of { key, value } (value a string or such a list), so the
-- key order is the one given.
local function json_object(fields)
  local parts = {}
  for i, kv in ipairs(fields) do
    local v = kv[2]
    parts[i] = json_string(kv[1]) .. ": " .. (type(v) == "table" and json_object(v) or json_string(v))
  end
  return "{" .. table.concat(parts, ", ") .. "}"
end
M.json_object = json_object

-- Write records (lists of { key, value }) as JSON Lines, atomically.
function M.write_jsonl(path, records)
  local tmp = path .. ".tmp"
  local f, err = io.open(tmp, "wb")
  if not f then error(("cannot write %s"):format(err), 0) end
  for _, r in ipairs(records) do f:write(json_object(r), "\n") end
  local ok, werr = f:close()
  if not ok then os.remove(tmp); error(("writing %s failed: %s"):format(tmp, tostring(werr)), 0) end
  local renamed, rerr = os.rename(tmp, path)
  if not renamed then os.remove(tmp); error(("renaming %s to %s failed: %s"):format(tmp, path, tostring(rerr)), 0) end
end

-- ---- reading files --------------------------------------------------------------

local function shell_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end
M.shell_quote = shell_quote

local function command_exists(name)
  return os.execute("command -v " .. name .. " >/dev/null 2>&1") == 0
end

local DECOMPRESSORS = { lz4 = "lz4 -dc", xz = "xz -dc", gz = "gzip -dc", bz2 = "bzip2 -dc", zst = "zstd -dc",
  lzma = "xz --format=lzma -dc" }
local APT_HELPER = "/usr/lib/apt/apt-helper"

local EXIT_MARK = "#dqbart-decompressor-exit "

-- Call fn(line) for each line (without its newline) of a plain or
-- compressed file (.lz4 .xz .gz .bz2 .zst .lzma). Compressed files go
-- through apt-helper cat-file, which reads every compression apt writes,
-- or else the matching command-line tool; a decompressor that fails is an
-- error naming the file, not a silently short corpus.
function M.each_line(path, fn)
  local ext = path:match("%.(%w+)$")
  local tool = ext and DECOMPRESSORS[ext]
  local f, err = io.open(path, "rb")
  if not f then error(("cannot open %s"):format(err), 0) end
  if not tool then
    for line in f:lines() do fn(line) end
    f:close()
    return
  end
  f:close()
  local command
  local helper = io.open(APT_HELPER, "rb")
  if helper then
    helper:close()
    command = APT_HELPER .. " cat-file " .. shell_quote(path)
  elseif command_exists(tool:match("^%S+")) then
    command = tool .. " " .. shell_quote(path)
  else
    error(("%s is %s-compressed and neither %s nor `%s` is available"):format(path, ext, APT_HELPER,
      tool:match("^%S+")), 0)
  end
  local p = io.popen("{ " .. command .. " 2>/dev/null; echo \"" .. EXIT_MARK .. "$?\"; }", "r")
  local status
  for line in p:lines() do
    local at = line:find(EXIT_MARK, 1, true)
    if at then
      -- the mark follows a last line that had no newline of its own
      if at > 1 then fn(line:sub(1, at - 1)) end
      status = tonumber(line:sub(at + #EXIT_MARK))
    else
      fn(line)
    end
  end
  p:close()
  if status ~= 0 then
    error(("decompressing %s with `%s` failed (exit status %s)"):format(path, command, tostring(status)), 0)
  end
end

function M.list_dir(dir)
  local p = io.popen("ls -1 " .. shell_quote(dir) .. " 2>/dev/null")
  local names = {}
  for name in p:lines() do names[#names + 1] = name end
  p:close()
  table.sort(names)
  return names
end

function M.mkdir_p(dir)
  if os.execute("mkdir -p " .. shell_quote(dir) .. " 2>/dev/null") ~= 0 then
    error(("cannot create the directory %s"):format(dir), 0)
  end
end

return M
