-- launcher: run the dqbart launcher (or any shell command) as a subprocess
-- and capture what it prints and its exit code.
--
--   local launcher = require("launcher")
--   local out, code = launcher.run("--help")             -- stdout + stderr
--   local out, err, code = launcher.run_split("size ...")  -- kept apart
--   local out, code = launcher.shell("cd x && ...")      -- any command
local files = require("files")

local M = {}

-- ctest sets DQ_SPEC_BUILD_DIR to the build tree; by hand, ./build.
M.exe = (os.getenv("DQ_SPEC_BUILD_DIR") or "build") .. "/dqbart"

-- The exit code of a finished os.execute. LuaJIT returns the raw wait
-- status (exit code * 256, or the signal number); Lua 5.2+ returns
-- (ok, "exit"|"signal", n). A process killed by a signal gets 128 + the
-- signal, as a shell reports it, so a crash never reads as success.
local function exit_code(ok, how, n)
  if type(ok) == "number" then
    if ok % 256 ~= 0 then return 128 + ok % 128 end
    return math.floor(ok / 256)
  end
  if how == "signal" then return 128 + n end
  return n
end

-- Runs `cmd` through the shell with `redirects` appended (and stdin from a
-- file holding the string `stdin`, when given); returns the exit code.
local function execute(cmd, redirects, stdin)
  local inp
  if stdin then
    inp = files.temp_file(stdin)
    redirects = redirects .. " <" .. inp
  end
  local code = exit_code(os.execute(cmd .. redirects))
  if inp then os.remove(inp) end
  return code
end

-- The file's text, and the file removed.
local function take(path)
  local s = files.read(path)
  os.remove(path)
  return s
end

-- Runs a shell command; returns its stdout and stderr together, and its
-- exit code.
function M.shell(cmd, stdin)
  local tmp = os.tmpname()
  local code = execute(cmd, " >" .. tmp .. " 2>&1", stdin)
  return take(tmp), code
end

-- Runs `dqbart ARGS`; returns stdout and stderr together, and the exit code.
function M.run(args, stdin)
  return M.shell(M.exe .. " " .. args, stdin)
end

-- Runs `dqbart ARGS`; returns stdout, stderr and the exit code.
function M.run_split(args, stdin)
  local out, err = os.tmpname(), os.tmpname()
  local code = execute(M.exe .. " " .. args, " >" .. out .. " 2>" .. err, stdin)
  return take(out), take(err), code
end

return M
