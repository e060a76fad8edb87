-- dqbart.cli.main: what the `dqbart` launcher runs with its command line.
--
--   dqbart                      the REPL
--   dqbart FILE.lua [args...]   run a Lua file with `dq` loaded and `arg` set
--   dqbart -e 'code'            run a chunk
--   dqbart SUBCOMMAND ...       see dqbart --help
local M = {}

local commands = require("dqbart.cli.commands")

-- Subcommand "train-bpe" lives in the module dqbart.cli.train_bpe.
local function module_name(command)
  return (command:gsub("%-", "_"))
end

local function usage()
  local lines = {
    "usage: dqbart [FILE.lua [args...] | -e CODE | SUBCOMMAND [options] | --help | --version]",
    "",
    "dqbart compresses BART-family models by joint distillation and quantization.",
    "With no arguments it opens a Lua REPL with the engine loaded as `dq`.",
    "",
    "  FILE.lua [args...]   run a recipe or script (arg[0] = FILE, arg[1..] = args)",
    "  -e CODE              run a Lua chunk",
    "  --version            print the version and the build's CUDA support",
    "  --help               print this help",
  }
  if #commands > 0 then
    lines[#lines + 1] = ""
    lines[#lines + 1] = "subcommands (dqbart SUBCOMMAND --help for their options):"
    for _, name in ipairs(commands) do
      local ok, cmd = pcall(require, "dqbart.cli." .. module_name(name))
      local summary = ok and cmd.summary or ("(cannot load: " .. tostring(cmd) .. ")")
      lines[#lines + 1] = ("  %-20s %s"):format(name, summary)
    end
  end
  return table.concat(lines, "\n")
end

local function is_command(name)
  for _, c in ipairs(commands) do if c == name then return true end end
  return false
end

-- Run a chunk with the launcher's globals: `dq` and `arg`.
local function run_chunk(chunk, script_arg)
  _G.arg = script_arg
  chunk()
  return 0
end

local function report(err)
  io.stderr:write("dqbart: ", tostring(err), "\n")
  return 1
end

local function run_file(exe, argv)
  local path = argv[1]
  local chunk, err = loadfile(path)
  if not chunk then return report(err) end
  local script_arg = { [0] = path, [-1] = exe }
  for i = 2, #argv do script_arg[i - 1] = argv[i] end
  local ok, status = xpcall(function()
    _G.arg = script_arg
    local result = chunk()
    -- A file returning a table is a recipe: dqbart.run checks it, prints it
    -- (--dry-run) or trains it.
    if type(result) == "table" then return require("dqbart.run").main(result, path, script_arg) end
    return 0
  end, debug.traceback)
  if not ok then return report(status) end
  return status
end

function M.main(exe, argv)
  local first = argv[1]
  if first == nil then
    _G.dq = require("dqbart")
    return require("dqbart.repl").run()
  elseif first == "--help" or first == "-h" then
    print(usage())
    return 0
  elseif first == "--version" then
    local dq = require("dqbart")
    print(("dqbart %s (%s)"):format(dq.version(),
      dq.built_with_cuda() and "CUDA backend built in" or "built without CUDA"))
    return 0
  elseif first == "-e" then
    if not argv[2] then io.stderr:write("dqbart: -e needs a Lua chunk\n"); return 2 end
    _G.dq = require("dqbart")
    local chunk, err = loadstring(argv[2], "=(command line)")
    if not chunk then return report(err) end
    local script_arg = { [0] = "-e", [-1] = exe }
    for i = 3, #argv do script_arg[i - 2] = argv[i] end
    local ok, status = xpcall(function() return run_chunk(chunk, script_arg) end, debug.traceback)
    if not ok then return report(status) end
    return status
  elseif is_command(first) then
    _G.dq = require("dqbart")
    local rest = {}
    for i = 2, #argv do rest[#rest + 1] = argv[i] end
    local ok, status = xpcall(function() return require("dqbart.cli." .. module_name(first)).run(rest) end, debug.traceback)
    if not ok then return report(status) end
    return status or 0
  elseif first:match("%.lua$") or io.open(first, "r") then
    _G.dq = require("dqbart")
    return run_file(exe, argv)
  else
    io.stderr:write(("dqbart: unknown subcommand or file '%s'\n\n%s\n"):format(first, usage()))
    return 2
  end
end

return M
