-- dqbart.progress: what a training run shows while it runs.
--
-- On a terminal one status line is redrawn in place (at most a few times a
-- second): epoch, update, every loss term of the last logged interval,
-- learning rate, tokens/s, elapsed time and the estimate of what is left.
-- Elsewhere (a pipe, a file, CI) each logged interval prints one plain
-- line. Messages (evaluations, checkpoints) print on their own lines in
-- both cases, and everything printed also goes to the log file.
--
--   local p = progress.new({ total = 900, file = "runs/x/train.log", tty = nil, out = io.stdout })
--   p:update({ update = 12, epoch = 1, lr = 3e-4, terms = {{"task", 2.1}}, loss = 2.1 })  -- may redraw
--   p:interval({ ... })   -- a logged interval: plain line (not a terminal), log file
--   p:message("validation: loss 2.31 (best)")
--   p:close()
local M = {}

-- A monotonic wall clock in seconds (os.clock counts CPU time of every thread).
local ffi = require("ffi")
pcall(ffi.cdef, [[
typedef struct { long tv_sec; long tv_nsec; } dq_progress_timespec;
int clock_gettime(int clk, dq_progress_timespec *ts);
]])
local ts_ct = ffi.typeof("dq_progress_timespec")
local ts = ts_ct()
function M.now()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

function M.duration(seconds)
  if seconds == nil or seconds ~= seconds or seconds == math.huge then return "?" end
  seconds = math.floor(seconds + 0.5)
  local h, m, s = math.floor(seconds / 3600), math.floor(seconds / 60) % 60, seconds % 60
  if h > 0 then return ("%d:%02d:%02d"):format(h, m, s) end
  return ("%02d:%02d"):format(m, s)
end

-- A loss value in 4 significant digits (nan and inf as such).
function M.number(v)
  if v == nil then return "-" end
  if v ~= v then return "nan" end
  if v == math.huge then return "inf" end
  if v == -math.huge then return "-inf" end
  local a = math.abs(v)
  if a ~= 0 and (a < 1e-3 or a >= 1e5) then return ("%.3e"):format(v) end
  return ("%.4g"):format(v)
end

local function is_tty(out)
  if out ~= io.stdout then return false end
  local ok, launcher = pcall(require, "dqbart.launcher")
  return ok and launcher.isatty(1) or false
end

local Progress = {}
Progress.__index = Progress

-- opts: total (updates), epochs (for "epoch e/E"), file (log file path,
-- appended), tty (default: stdout is a terminal), out (io.stdout), label
-- (e.g. "teacher"), start_update (updates done before this process).
function M.new(opts)
  opts = opts or {}
  local out = opts.out or io.stdout
  local self = setmetatable({
    out = out, total = opts.total, epochs = opts.epochs, label = opts.label,
    tty = opts.tty, start = M.now(), start_update = opts.start_update or 0, last_draw = 0, width = 0,
  }, Progress)
  if self.tty == nil then self.tty = is_tty(out) end
  if opts.file then
    local dir = opts.file:match("^(.*)/[^/]+$")
    if dir then os.execute("mkdir -p '" .. dir:gsub("'", "'\\''") .. "' 2>/dev/null") end
    self.log = io.open(opts.file, "ab")
  end
  return self
end

-- Seconds since this process started the run and the estimate of the rest.
function Progress:times(update)
  local elapsed = M.now() - self.start
  local done = update - self.start_update
  local eta
  if self.total and done > 0 then eta = elapsed / done * (self.total - update) end
  return elapsed, eta
end

-- s: update, epoch, lr, loss, terms ({ {name, value}, ... }), tokens_per_s.
function Progress:text(s)
  local parts = {}
  if self.label then parts[#parts + 1] = self.label end
  if s.epoch then
    local e = self.epochs
    parts[#parts + 1] = e and ("epoch %d/%s"):format(s.epoch, e % 1 == 0 and ("%d"):format(e) or ("%.2f"):format(e))
      or ("epoch %d"):format(s.epoch)
  end
  parts[#parts + 1] = self.total and ("step %d/%d"):format(s.update, self.total) or ("step %d"):format(s.update)
  if s.loss then
    local terms = {}
    for _, t in ipairs(s.terms or {}) do terms[#terms + 1] = ("%s %s"):format(t[1], M.number(t[2])) end
    parts[#parts + 1] = ("loss %s"):format(M.number(s.loss)) ..
      (#terms > 1 and (" (" .. table.concat(terms, " ") .. ")") or "")
  end
  if s.lr then parts[#parts + 1] = ("lr %.3g"):format(s.lr) end
  if s.tokens_per_s then parts[#parts + 1] = ("%.0f tok/s"):format(s.tokens_per_s) end
  local elapsed, eta = self:times(s.update)
  parts[#parts + 1] = ("%s elapsed"):format(M.duration(elapsed)) ..
    (eta and (", ETA %s"):format(M.duration(eta)) or "")
  return table.concat(parts, " | ")
end

local function write_log(self, line)
  if self.log then
    self.log:write(line, "\n")
    self.log:flush()
  end
end

local function clear_line(self)
  if self.tty and self.width > 0 then
    self.out:write("\r", string.rep(" ", self.width), "\r")
    self.width = 0
  end
end

-- Redraw the status line (a terminal only; at most every 0.2 s unless forced).
function Progress:update(s, force)
  self.last = s
  if not self.tty then return end
  local t = M.now()
  if not force and t - self.last_draw < 0.2 then return end
  self.last_draw = t
  local line = self:text(s)
  local pad = math.max(0, self.width - #line)
  self.out:write("\r", line, string.rep(" ", pad))
  self.out:flush()
  self.width = #line
end

-- A logged interval: the status line on a terminal, a plain line elsewhere;
-- always a line in the log file.
function Progress:interval(s)
  local line = self:text(s)
  write_log(self, line)
  if self.tty then
    self:update(s, true)
  else
    self.out:write(line, "\n")
    self.out:flush()
  end
end

-- A line of its own (the status line is redrawn below it).
function Progress:message(fmt, ...)
  local line = select("#", ...) > 0 and fmt:format(...) or fmt
  clear_line(self)
  self.out:write(line, "\n")
  self.out:flush()
  write_log(self, line)
  if self.tty and self.last then self:update(self.last, true) end
end

function Progress:close()
  if self.tty and self.width > 0 then
    self.out:write("\n")
    self.out:flush()
    self.width = 0
  end
  if self.log then self.log:close() self.log = nil end
end

return M
