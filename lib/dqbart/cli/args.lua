-- dqbart.cli.args: command-line options for subcommands.
--
--   local args = require("dqbart.cli.args")
--   local opts = args.parse(argv, {
--     command = "tokenize",
--     summary = "Encode text lines to token ids (or decode with --decode).",
--     options = {
--       { "--tokenizer", metavar = "DIR", help = "tokenizer directory", required = true },
--       { "--device", metavar = "DEV", default = "cpu", choices = { "cpu", "cuda" } },
--       { "--beams", metavar = "N", type = "number" },
--       { "--decode", flag = true, help = "ids in, text out" },
--     },
--     positional = { metavar = "FILE", help = "...", min = 0, max = 1 },
--   })
--
-- Option names map to keys with dashes as underscores (--no-special ->
-- opts.no_special). `--name=value` and `--name value` both work. --help
-- prints the usage and returns nil, 0; a bad command line returns
-- nil, 2 after printing the problem and the usage to stderr.
local M = {}

local function key_of(name)
  return (name:gsub("^%-%-", ""):gsub("%-", "_"))
end

function M.usage(spec)
  local lines = { ("usage: dqbart %s [options]%s"):format(spec.command,
    spec.positional and (" " .. (spec.positional.metavar or "ARG") ..
      ((spec.positional.max or 1) > 1 and " ..." or "")) or "") }
  if spec.summary then lines[#lines + 1] = "\n" .. spec.summary end
  lines[#lines + 1] = "\noptions:"
  local opts = {}
  for _, o in ipairs(spec.options or {}) do opts[#opts + 1] = o end
  opts[#opts + 1] = { "--help", flag = true, help = "show this help and exit" }
  for _, o in ipairs(opts) do
    local left = o[1] .. (o.flag and "" or (" " .. (o.metavar or "VALUE")))
    local help = o.help or ""
    if o.choices then help = help .. (" (one of: %s)"):format(table.concat(o.choices, ", ")) end
    if o.required then help = help .. " [required]"
    elseif o.default ~= nil and not o.flag then help = help .. (" [default: %s]"):format(tostring(o.default)) end
    lines[#lines + 1] = ("  %-26s %s"):format(left, help)
  end
  if spec.epilog then lines[#lines + 1] = "\n" .. spec.epilog end
  return table.concat(lines, "\n")
end

local function fail(spec, message)
  io.stderr:write(("dqbart %s: %s\n%s\n"):format(spec.command, message, M.usage(spec)))
  return nil, 2
end

local function convert(spec, o, raw)
  if o.type == "number" then
    local v = tonumber(raw)
    if not v then return nil, ("%s expects a number, got '%s'"):format(o[1], raw) end
    return v
  end
  if o.choices then
    for _, c in ipairs(o.choices) do if c == raw then return raw end end
    return nil, ("%s must be one of %s, got '%s'"):format(o[1], table.concat(o.choices, ", "), raw)
  end
  return raw
end

-- Returns opts (with opts.positional, a list) or nil, exit_code.
function M.parse(argv, spec)
  local by_name, opts = {}, { positional = {} }
  for _, o in ipairs(spec.options or {}) do
    by_name[o[1]] = o
    if o.default ~= nil then opts[key_of(o[1])] = o.default end
    if o.flag and o.default == nil then opts[key_of(o[1])] = false end
  end
  local i = 1
  while i <= #argv do
    local a = argv[i]
    if a == "--help" or a == "-h" then
      print(M.usage(spec))
      return nil, 0
    elseif a == "--" then
      for j = i + 1, #argv do opts.positional[#opts.positional + 1] = argv[j] end
      break
    elseif a:sub(1, 2) == "--" then
      local name, inline = a:match("^(%-%-[^=]+)=(.*)$")
      name = name or a
      local o = by_name[name]
      if not o then return fail(spec, ("unknown option %s"):format(name)) end
      if o.flag then
        if inline then return fail(spec, ("%s takes no value"):format(name)) end
        opts[key_of(name)] = true
      else
        local raw = inline
        if not raw then
          i = i + 1
          raw = argv[i]
          if raw == nil then return fail(spec, ("%s needs a value (%s)"):format(name, o.metavar or "VALUE")) end
        end
        local v, err = convert(spec, o, raw)
        if v == nil then return fail(spec, err) end
        if o.multiple then
          local list = opts[key_of(name)]
          if type(list) ~= "table" then list = {}; opts[key_of(name)] = list end
          list[#list + 1] = v
        else
          opts[key_of(name)] = v
        end
      end
    else
      opts.positional[#opts.positional + 1] = a
    end
    i = i + 1
  end
  for _, o in ipairs(spec.options or {}) do
    if o.required and opts[key_of(o[1])] == nil then
      return fail(spec, ("missing required option %s"):format(o[1]))
    end
  end
  local pos = spec.positional or { max = 0 }
  if #opts.positional < (pos.min or 0) then
    return fail(spec, ("expected %s"):format(pos.metavar or "an argument"))
  end
  if #opts.positional > (pos.max or 0) then
    return fail(spec, ("unexpected argument '%s'"):format(opts.positional[(pos.max or 0) + 1]))
  end
  return opts
end

return M
