-- dqbart.cli.user_errors: the run function of a subcommand whose failures
-- are the user's to fix (bad input, a file that will not load).
--
--   M.run = user_errors.runner(SPEC, run)
--
-- The function returned parses argv with SPEC (dqbart.cli.args: usage on
-- --help or a bad option) and calls run(opts), whose result is the exit
-- code. An error raised inside run is printed as "dqbart COMMAND: message",
-- without the Lua position or a traceback, after what was already written
-- to stdout; the exit code is then 1.
local args = require("dqbart.cli.args")

local M = {}

function M.runner(spec, run)
  return function(argv)
    local opts, code = args.parse(argv, spec)
    if not opts then return code end
    local ok, result = pcall(run, opts)
    if not ok then
      io.stdout:flush()
      io.stderr:write("dqbart " .. spec.command .. ": " .. tostring(result):gsub("^[^:\n]+%.lua:%d+: ", "") .. "\n")
      return 1
    end
    return result
  end
end

return M
