-- dqbart.checkpoint: training checkpoints that resume bit for bit.
--
-- A checkpoint is a directory in Hugging Face layout (config.json,
-- model.safetensors, the tokenizer files: the model's latent f32 weights,
-- loadable by transformers and by dq.model.load) plus
--   optimizer.safetensors   AdamW's moments (exp_avg, exp_avg_sq)
--   trainer_state.json      updates made, the optimizer's step count, the
--                           loader's position (epoch, batch), the random
--                           stream (seed, offset), the best validation score
-- Directories are written whole under a temporary name and swapped in with
-- renames, so a crash leaves the previous checkpoint (or, between the two
-- renames, "<dir>.old", which load() also finds).
--
--   checkpoint.save(dir, { model = m, optimizer = opt, state = {...} })
--   checkpoint.load(dir) -> state, path   (nil when there is none)
--   checkpoint.load_optimizer(path, opt)
--   checkpoint.publish(dir, function(tmp) ... end)   any directory, atomically
--   checkpoint.json_encode(v), checkpoint.json_decode(text)
local safetensors = require("dqbart.safetensors")

local M = {}

M.FORMAT = "dqbart-checkpoint-1"
M.STATE_FILE = "trainer_state.json"
M.OPTIMIZER_FILE = "optimizer.safetensors"

-- ---- files and directories ---------------------------------------------------------------

local function quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

function M.exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  -- a directory opens for reading on Linux; this covers other cases
  return os.rename(path, path) == true
end

function M.mkdir_p(dir)
  if os.execute("mkdir -p " .. quote(dir) .. " 2>/dev/null") ~= 0 then
    error(("cannot create the directory %s"):format(dir), 0)
  end
end

function M.remove_tree(path)
  os.execute("rm -rf " .. quote(path) .. " 2>/dev/null")
end

function M.read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

-- One run at a time per directory: `dir.lock` is made with mkdir (atomic)
-- and holds the owner's pid. A lock whose process is gone (killed, power
-- cut) is taken over. Returns the function that releases it.
local function pid()
  local ffi = require("ffi")
  pcall(ffi.cdef, "int getpid(void);")
  return ffi.C.getpid()
end

local function alive(p)
  return p and os.execute(("kill -0 %d 2>/dev/null"):format(p)) == 0
end

function M.lock(dir, what)
  local lock = dir .. ".lock"
  local parent = lock:match("^(.*)/[^/]+$")
  if parent and parent ~= "" then M.mkdir_p(parent) end
  for _ = 1, 2 do
    if os.execute("mkdir " .. quote(lock) .. " 2>/dev/null") == 0 then
      M.write_file(lock .. "/pid", tostring(pid()) .. "\n")
      return function() M.remove_tree(lock) end
    end
    local owner = tonumber(M.read_file(lock .. "/pid") or "")
    if alive(owner) then
      error(("%s: another dqbart run (pid %d) is using %s; wait for it to finish or give this run another "
        .. "directory (if there is no such run, remove %s)"):format(what, owner, dir, lock), 0)
    end
    M.remove_tree(lock) -- left by a run that no longer exists
  end
  error(("%s: cannot lock %s (%s.lock)"):format(what, dir, dir), 0)
end

-- fn(...) with dir locked; the lock goes whatever fn does. Returns fn's
-- first two results.
function M.with_lock(dir, what, fn, ...)
  local release = M.lock(dir, what)
  local ok, a, b = pcall(fn, ...)
  release()
  if not ok then error(a, 0) end
  return a, b
end

-- Write a file through a temporary name and a rename.
function M.write_file(path, text)
  local tmp = path .. ".tmp"
  local f, err = io.open(tmp, "wb")
  if not f then error(("cannot write %s"):format(err), 0) end
  f:write(text)
  local ok, werr = f:close()
  if not ok then os.remove(tmp); error(("writing %s failed: %s"):format(tmp, tostring(werr)), 0) end
  local renamed, rerr = os.rename(tmp, path)
  if not renamed then os.remove(tmp); error(("cannot rename %s to %s: %s"):format(tmp, path, tostring(rerr)), 0) end
end

-- Build a directory with fill(tmp) and put it at `dir` in one step: the
-- old one moves to dir.old, the new one in, then dir.old goes.
function M.publish(dir, fill)
  local parent = dir:match("^(.*)/[^/]+$")
  if parent and parent ~= "" then M.mkdir_p(parent) end
  local tmp, old = dir .. ".tmp", dir .. ".old"
  M.remove_tree(tmp)
  local ok, err = pcall(fill, tmp)
  if not ok then M.remove_tree(tmp); error(err, 0) end
  if M.exists(dir) then
    M.remove_tree(old)
    local moved, why = os.rename(dir, old)
    if not moved then M.remove_tree(tmp); error(("cannot move %s aside: %s"):format(dir, tostring(why)), 0) end
  end
  local placed, why = os.rename(tmp, dir)
  if not placed then error(("cannot rename %s to %s: %s"):format(tmp, dir, tostring(why)), 0) end
  M.remove_tree(old)
end

-- ---- JSON (the state file; numbers keep every bit) -----------------------------------------

local function number_text(v)
  if v ~= v or v == math.huge or v == -math.huge then return "null" end
  if v % 1 == 0 and math.abs(v) < 2 ^ 53 then return ("%d"):format(v) end
  return ("%.17g"):format(v)
end

local ESC = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t", ["\b"] = "\\b",
  ["\f"] = "\\f" }
local function string_text(s)
  return '"' .. s:gsub('[%c"\\]', function(c) return ESC[c] or ("\\u%04x"):format(c:byte()) end) .. '"'
end

local function is_list(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n == #t and (n > 0 or getmetatable(t) == M.LIST)
end
M.LIST = {} -- setmetatable({}, checkpoint.LIST): an empty table that encodes as []

-- Keys sorted; `order` (optional list) puts those keys first, in that order.
function M.json_encode(v, order)
  local t = type(v)
  if t == "nil" then return "null" end
  if t == "boolean" then return tostring(v) end
  if t == "number" then return number_text(v) end
  if t == "string" then return string_text(v) end
  if t == "cdata" then return number_text(tonumber(v)) end
  if t ~= "table" then error(("json_encode: cannot encode a %s"):format(t), 2) end
  if is_list(v) then
    local parts = {}
    for i, x in ipairs(v) do parts[i] = M.json_encode(x) end
    return "[" .. table.concat(parts, ", ") .. "]"
  end
  local keys, seen = {}, {}
  for _, k in ipairs(order or {}) do
    if v[k] ~= nil then keys[#keys + 1] = k; seen[k] = true end
  end
  local rest = {}
  for k in pairs(v) do
    if type(k) ~= "string" then error("json_encode: object keys must be strings", 2) end
    if not seen[k] then rest[#rest + 1] = k end
  end
  table.sort(rest)
  for _, k in ipairs(rest) do keys[#keys + 1] = k end
  local parts = {}
  for i, k in ipairs(keys) do parts[i] = string_text(k) .. ": " .. M.json_encode(v[k]) end
  return "{" .. table.concat(parts, ", ") .. "}"
end

-- A small strict reader for what json_encode writes (and JSON in general).
function M.json_decode(text)
  local pos = 1
  local function fail(what)
    error(("json_decode: %s at byte %d"):format(what, pos), 0)
  end
  local function skip()
    pos = text:find("[^ \t\r\n]", pos) or (#text + 1)
  end
  local value
  local function str()
    pos = pos + 1
    local out = {}
    while true do
      local c = text:sub(pos, pos)
      if c == "" then fail("unterminated string") end
      if c == '"' then pos = pos + 1 break end
      if c == "\\" then
        local e = text:sub(pos + 1, pos + 1)
        local map = { ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n", r = "\r", t = "\t" }
        if map[e] then
          out[#out + 1] = map[e]
          pos = pos + 2
        elseif e == "u" then
          local code = tonumber(text:sub(pos + 2, pos + 5), 16)
          if not code then fail("bad \\u escape") end
          if code < 0x80 then out[#out + 1] = string.char(code)
          elseif code < 0x800 then out[#out + 1] = string.char(0xC0 + math.floor(code / 64), 0x80 + code % 64)
          else
            out[#out + 1] = string.char(0xE0 + math.floor(code / 4096), 0x80 + math.floor(code / 64) % 64,
              0x80 + code % 64)
          end
          pos = pos + 6
        else
          fail("bad escape")
        end
      else
        local stop = text:find('["\\]', pos) or (#text + 1)
        out[#out + 1] = text:sub(pos, stop - 1)
        pos = stop
      end
    end
    return table.concat(out)
  end
  value = function()
    skip()
    local c = text:sub(pos, pos)
    if c == "{" then
      pos = pos + 1
      local obj = {}
      skip()
      if text:sub(pos, pos) == "}" then pos = pos + 1 return obj end
      while true do
        skip()
        if text:sub(pos, pos) ~= '"' then fail("expected a key") end
        local k = str()
        skip()
        if text:sub(pos, pos) ~= ":" then fail("expected ':'") end
        pos = pos + 1
        obj[k] = value()
        skip()
        local d = text:sub(pos, pos)
        pos = pos + 1
        if d == "}" then return obj end
        if d ~= "," then fail("expected ',' or '}'") end
      end
    elseif c == "[" then
      pos = pos + 1
      local arr = setmetatable({}, M.LIST)
      skip()
      if text:sub(pos, pos) == "]" then pos = pos + 1 return arr end
      while true do
        arr[#arr + 1] = value()
        skip()
        local d = text:sub(pos, pos)
        pos = pos + 1
        if d == "]" then return arr end
        if d ~= "," then fail("expected ',' or ']'") end
      end
    elseif c == '"' then
      return str()
    elseif text:sub(pos, pos + 3) == "true" then pos = pos + 4 return true
    elseif text:sub(pos, pos + 4) == "false" then pos = pos + 5 return false
    elseif text:sub(pos, pos + 3) == "null" then pos = pos + 4 return nil
    else
      local num = text:match("^-?%d+%.?%d*[eE]?[-+]?%d*", pos)
      if not num or num == "" or not tonumber(num) then fail("unexpected character") end
      pos = pos + #num
      return tonumber(num)
    end
  end
  local v = value()
  skip()
  if pos <= #text then fail("trailing text") end
  return v
end

-- ---- checkpoints ------------------------------------------------------------------------------

-- parts: model (saved in Hugging Face layout), optimizer (dq.optim object),
-- state (a table: the trainer's). Written whole or not at all.
function M.save(dir, parts)
  M.publish(dir, function(tmp)
    parts.model:save(tmp)
    local opt = parts.optimizer:state()
    safetensors.save(tmp .. "/" .. M.OPTIMIZER_FILE, { exp_avg = opt.exp_avg, exp_avg_sq = opt.exp_avg_sq },
      { step = tostring(opt.step) })
    local state = {}
    for k, v in pairs(parts.state) do state[k] = v end
    state.format = M.FORMAT
    state.optimizer_step = opt.step
    M.write_file(tmp .. "/" .. M.STATE_FILE, M.json_encode(state, { "format", "update", "epoch" }) .. "\n")
  end)
end

-- The state of the checkpoint in `dir` (or of dir.old when a swap was cut
-- short) and the directory it is in; nil when there is none.
function M.load(dir)
  for _, path in ipairs({ dir, dir .. ".old" }) do
    local text = M.read_file(path .. "/" .. M.STATE_FILE)
    if text then
      local ok, state = pcall(M.json_decode, text)
      if not ok then error(("checkpoint %s/%s is damaged: %s"):format(path, M.STATE_FILE, state), 0) end
      if state.format ~= M.FORMAT then
        error(("checkpoint %s was written by another version (format %s, expected %s)"):format(path,
          tostring(state.format), M.FORMAT), 0)
      end
      return state, path
    end
  end
  return nil
end

-- Put the saved moments and step count into a freshly made optimizer.
function M.load_optimizer(path, optimizer)
  local f = safetensors.open(path .. "/" .. M.OPTIMIZER_FILE)
  local step = tonumber(f:metadata().step)
  local exp_avg, exp_avg_sq = f:tensor("exp_avg"), f:tensor("exp_avg_sq")
  optimizer:load_state({ step = step, exp_avg = exp_avg, exp_avg_sq = exp_avg_sq })
  exp_avg:free()
  exp_avg_sq:free()
  f:close()
end

return M
