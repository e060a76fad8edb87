-- dqbart.repl: the interactive prompt of `dqbart` with no arguments.
--
-- Line editing and history come from readline (history in
-- $DQBART_HISTORY or ~/.dqbart_history). A statement may span lines: an
-- incomplete chunk continues at the ">>" prompt. `=expr` and bare
-- expressions print their values; errors print and the REPL goes on.
-- Without a terminal on stdin it reads plain lines (for pipes and tests).
local M = {}

local launcher_ok, launcher = pcall(require, "dqbart.launcher")

local function history_path()
  local p = os.getenv("DQBART_HISTORY")
  if p then return p end
  local home = os.getenv("HOME")
  return home and (home .. "/.dqbart_history") or nil
end

local function show(...)
  local n = select("#", ...)
  if n == 0 then return end
  local parts = {}
  for i = 1, n do parts[i] = tostring((select(i, ...))) end
  print(table.concat(parts, "\t"))
end

-- Compile a chunk: first as an expression to print, then as statements.
-- Returns fn, or nil plus "incomplete" or an error message.
local function compile(source)
  local expr = source:gsub("^%s*=", "")
  local fn = loadstring("return " .. expr, "=stdin")
  if fn then return fn end
  local err
  fn, err = loadstring(source, "=stdin")
  if fn then return fn end
  if err:match("'<eof>'$") or err:match("<eof>") then return nil, "incomplete" end
  return nil, err
end

-- An error prints its message only: the REPL's own frames would be noise.
local function evaluate(fn)
  local results = { pcall(fn) }
  if results[1] then
    show(unpack(results, 2, table.maxn(results)))
  else
    print(tostring(results[2]))
  end
end

function M.run()
  local interactive = launcher_ok and launcher.isatty(0)
  local hist = interactive and history_path()
  if hist then launcher.load_history(hist) end
  local function read(prompt)
    if interactive then return launcher.readline(prompt) end
    return io.read("*l")
  end
  if interactive then
    local dq = require("dqbart")
    print(("dqbart %s, LuaJIT REPL: the engine is `dq` (dq.randn(2, 3, {seed=1}), dq.zeros(4)); "
      .. "Ctrl-D quits"):format(dq.version()))
  end
  local pending
  while true do
    local line = read(pending and ">> " or "dq> ")
    if line == nil then break end
    if interactive and line:match("%S") then launcher.add_history(line) end
    local source = pending and (pending .. "\n" .. line) or line
    local fn, err = compile(source)
    if fn then
      pending = nil
      evaluate(fn)
    elseif err == "incomplete" then
      pending = source
    else
      pending = nil
      print(err)
    end
  end
  if interactive then io.write("\n") end
  if hist then launcher.save_history(hist, 1000) end
  return 0
end

return M
