-- dqbart tokenize: text lines in, token ids out (or back with --decode).
--
-- The contract (parity checks rely on it; keep it stable):
--   * encode: every line of stdin is one text, without its trailing "\n"
--     (a "\r" before it stays part of the text); the output has one line
--     per input line: the ids separated by single spaces (an empty line
--     when there are none). A last line without "\n" is a text too.
--   * texts holding newlines cannot be written as lines: with --json every
--     input line is instead one JSON string ("a\nb"), decoded first.
--   * --decode: every input line is ids separated by spaces; the output is
--     one line of text per input line (with --json, one JSON string per
--     line, so decoded newlines survive).
local user_errors = require("dqbart.cli.user_errors")

local M = {
  summary = "encode text lines to token ids (or decode ids with --decode)",
}

local SPEC = {
  command = "tokenize",
  summary = "Read lines on stdin and write one line of space-separated token ids per line\n"
    .. "(with --decode: one line of ids in, one line of text out).",
  options = {
    { "--tokenizer", metavar = "DIR", required = true,
      help = "tokenizer directory (tokenizer.json, or vocab.json + merges.txt) or tokenizer.json path" },
    { "--no-special", flag = true, help = "do not add the special tokens (<s> X </s> for BART)" },
    { "--decode", flag = true, help = "ids in, text out" },
    { "--skip-special", flag = true, help = "with --decode: drop special tokens" },
    { "--json", flag = true, help = "texts are JSON strings, one per line (for texts with newlines)" },
    { "--template", metavar = "T", help = "post-processing template, e.g. '$A </s> ro_RO'" },
    { "--batch", metavar = "N", type = "number", default = 8192, help = "lines per engine call" },
  },
  epilog = "Texts are UTF-8; a line is a text without its trailing newline, so texts that\n"
    .. "contain newlines need --json (one JSON string per line, e.g. \"a\\nb\").",
}

-- ---- JSON strings --------------------------------------------------------------

local function utf8_char(cp)
  if cp < 0x80 then return string.char(cp) end
  if cp < 0x800 then return string.char(0xC0 + math.floor(cp / 64), 0x80 + cp % 64) end
  if cp < 0x10000 then
    return string.char(0xE0 + math.floor(cp / 4096), 0x80 + math.floor(cp / 64) % 64, 0x80 + cp % 64)
  end
  return string.char(0xF0 + math.floor(cp / 262144), 0x80 + math.floor(cp / 4096) % 64,
    0x80 + math.floor(cp / 64) % 64, 0x80 + cp % 64)
end

local ESCAPES = { ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n", r = "\r", t = "\t" }

-- Decode one JSON string literal (the whole line, spaces around allowed).
local function json_string(line, line_no)
  local s = line:match('^%s*(".*")%s*$')
  if not s then error(("line %d is not a JSON string"):format(line_no), 0) end
  local out, i, n = {}, 2, #s - 1
  while i <= n do
    local j = s:find('[\\"]', i)
    if not j or j > n then
      out[#out + 1] = s:sub(i, n)
      break
    end
    if s:sub(j, j) == '"' then error(("line %d: unescaped '\"' inside the JSON string"):format(line_no), 0) end
    out[#out + 1] = s:sub(i, j - 1)
    local e = s:sub(j + 1, j + 1)
    if e == "u" then
      local hex = s:sub(j + 2, j + 5)
      local cp = hex:match("^%x%x%x%x$") and tonumber(hex, 16)
      if not cp then error(("line %d: bad \\u escape"):format(line_no), 0) end
      i = j + 6
      if cp >= 0xD800 and cp <= 0xDBFF then
        local lo = s:sub(i, i + 5):match("^\\u(%x%x%x%x)$")
        lo = lo and tonumber(lo, 16)
        if lo and lo >= 0xDC00 and lo <= 0xDFFF then
          cp = 0x10000 + (cp - 0xD800) * 0x400 + (lo - 0xDC00)
          i = i + 6
        else
          cp = 0xFFFD -- a lone surrogate (Python's json would keep it; UTF-8 cannot)
        end
      elseif cp >= 0xDC00 and cp <= 0xDFFF then
        cp = 0xFFFD
      end
      out[#out + 1] = utf8_char(cp)
    elseif ESCAPES[e] then
      out[#out + 1] = ESCAPES[e]
      i = j + 2
    else
      error(("line %d: bad escape \\%s"):format(line_no, e), 0)
    end
  end
  return table.concat(out)
end

local function json_quote(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    if c == '"' then return '\\"' end
    if c == "\\" then return "\\\\" end
    if c == "\n" then return "\\n" end
    if c == "\r" then return "\\r" end
    if c == "\t" then return "\\t" end
    return ("\\u%04x"):format(c:byte())
  end) .. '"'
end

-- ---- the command ---------------------------------------------------------------------

local function encode_lines(tok, lines, opts, out)
  local buf = {}
  for i, ids in ipairs(tok:encode_batch(lines, { special = not opts.no_special })) do
    buf[i] = table.concat(ids, " ")
  end
  buf[#buf + 1] = ""
  out:write(table.concat(buf, "\n"))
end

local function decode_line(tok, line, line_no, opts)
  local ids = {}
  for w in line:gmatch("%S+") do
    local id = tonumber(w)
    if not id or id % 1 ~= 0 then error(("line %d: '%s' is not an integer id"):format(line_no, w), 0) end
    ids[#ids + 1] = id
  end
  local text = tok:decode(ids, { skip_special = opts.skip_special })
  return opts.json and json_quote(text) or text
end

local function run(opts)
  if opts.batch < 1 then
    io.stderr:write("dqbart tokenize: --batch must be at least 1\n")
    return 2
  end
  local tok = dq.tokenizer.load(opts.tokenizer)
  if opts.template then tok:set_template(opts.template) end
  local out = io.stdout
  out:setvbuf("full")
  local lines, line_no = {}, 0
  local function flush()
    if #lines > 0 then encode_lines(tok, lines, opts, out) end
    lines = {}
  end
  local function handle(line)
    line_no = line_no + 1
    if opts.decode then
      out:write(decode_line(tok, line, line_no, opts), "\n")
    else
      lines[#lines + 1] = opts.json and json_string(line, line_no) or line
      if #lines >= opts.batch then flush() end
    end
  end
  -- blocks, not io.lines: lines may hold NUL bytes
  local rest = ""
  while true do
    local block = io.stdin:read(1048576)
    if not block then break end
    block = rest .. block
    local start = 1
    while true do
      local nl = block:find("\n", start, true)
      if not nl then break end
      handle(block:sub(start, nl - 1))
      start = nl + 1
    end
    rest = block:sub(start)
  end
  if rest ~= "" then handle(rest) end
  flush()
  out:flush()
  return 0
end

-- Bad input and unloadable tokenizers are the user's errors: a message, no traceback.
M.run = user_errors.runner(SPEC, run)

return M
