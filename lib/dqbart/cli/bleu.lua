-- dqbart bleu: corpus BLEU of a hypotheses file against one or more
-- reference files, one segment per line, printed as JSON with sacreBLEU's
-- signature.
local args = require("dqbart.cli.args")
local metrics = require("dqbart.metrics")

local spec = {
  command = "bleu",
  summary = "Corpus BLEU as sacreBLEU's defaults (13a, exp smoothing), with its signature (JSON).",
  options = {
    { "--pred", metavar = "FILE", required = true, help = "hypotheses, one per line" },
    { "--ref", metavar = "FILE", required = true, multiple = true,
      help = "references, one per line; repeat for several reference streams" },
    { "--per-example", flag = true, help = "add every segment's sentence BLEU" },
  },
  epilog = [[
Scores match sacreBLEU 2.6.0's BLEU() (tokenize=13a, smooth_method=exp,
max_ngram_order=4, effective_order=False, lowercase=False): score, bp, ratio,
precisions, counts, totals, sys_len and ref_len are its numbers (score is not
rounded; sacreBLEU's JSON rounds it to 2 decimals). 'text' is the line
sacreBLEU prints with --format text. A trailing '\r' on a line is dropped.]],
}

local function run(argv)
  local opts, code = args.parse(argv, spec)
  if not opts then return code end
  local hyps, err = metrics.read_lines(opts.pred)
  if not hyps then
    io.stderr:write(("dqbart bleu: cannot read --pred: %s\n"):format(err))
    return 1
  end
  if #hyps == 0 then
    io.stderr:write(("dqbart bleu: --pred %s is empty\n"):format(opts.pred))
    return 1
  end
  local streams = {}
  for k, path in ipairs(opts.ref) do
    local refs, rerr = metrics.read_lines(path)
    if not refs then
      io.stderr:write(("dqbart bleu: cannot read --ref: %s\n"):format(rerr))
      return 1
    end
    if #refs ~= #hyps then
      io.stderr:write(("dqbart bleu: line counts differ: --pred %s has %d lines, --ref %s has %d lines\n")
        :format(opts.pred, #hyps, path, #refs))
      return 1
    end
    streams[k] = refs
  end
  local ok, result = pcall(metrics.bleu, hyps, streams, { per_example = opts.per_example })
  if not ok then
    io.stderr:write("dqbart bleu: ", (tostring(result):gsub("^[^:]*:%d+: ", "")), "\n")
    return 1
  end
  result.name = "BLEU"
  -- the signature's fields, as sacreBLEU's JSON output lists them
  for field in result.signature:gmatch("[^|]+") do
    local key, value = field:match("^([^:]+):(.*)$")
    if key and key ~= "nrefs" then result[key] = value end
  end
  result.nrefs = tostring(result.nrefs)
  local order = { "name", "score", "signature", "verbose", "text", "bp", "ratio", "precisions",
                  "counts", "totals", "sys_len", "ref_len", "nrefs", "case", "eff", "tok", "smooth", "version" }
  io.write(metrics.to_json(result, order), "\n")
  return 0
end

return { summary = spec.summary, run = run }
