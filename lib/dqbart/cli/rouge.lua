-- dqbart rouge: ROUGE of a predictions file against a references file, one
-- text per line, printed as JSON (numbers are rouge-score's fractions x 100).
local args = require("dqbart.cli.args")
local metrics = require("dqbart.metrics")

local spec = {
  command = "rouge",
  summary = "ROUGE-1/2/L/Lsum of predictions against references, as Google's rouge-score (JSON).",
  options = {
    { "--pred", metavar = "FILE", required = true, help = "predictions, one per line" },
    { "--ref", metavar = "FILE", required = true, help = "references, one per line" },
    { "--no-stem", flag = true, help = "no Porter stemming (rouge-score use_stemmer=False)" },
    { "--types", metavar = "LIST", default = "rouge1,rouge2,rougeL,rougeLsum",
      help = "comma-separated ROUGE types (rouge1..rouge9, rougeL, rougeLsum)" },
    { "--lsum-sep", metavar = "MARK",
      help = "a marker inside lines that separates sentences, e.g. '<n>'" },
    { "--split-sentences", flag = true,
      help = "split lines into sentences with the rule-based splitter (not nltk punkt)" },
    { "--bootstrap", metavar = "N", type = "number", default = 1000,
      help = "bootstrap resamples for low/mid/high (0: none)" },
    { "--confidence", metavar = "C", type = "number", default = 0.95, help = "bootstrap interval level" },
    { "--seed", metavar = "S", type = "number", default = 0, help = "bootstrap seed" },
  },
  epilog = [[
Each line is one text. rougeLsum needs sentences: rouge-score splits a text
on newlines, which a line cannot hold, so mark sentence breaks with
--lsum-sep (CNN/DailyMail preprocessing writes '<n>'; the marker then counts
as a line break for every type and never as a token), or let
--split-sentences split plain text. For exact parity with the Hugging Face
summarization scripts (nltk.sent_tokenize + '\n'.join) split with nltk
beforehand and join the sentences with --lsum-sep's marker.

Output: for each type p, r, f (means over the pairs, x 100) and, with
--bootstrap, low/mid/high as rouge-score's BootstrapAggregator (mid is the
median of the bootstrap means; the resampling generator differs from numpy's,
so intervals agree statistically, not digit for digit). A trailing '\r' on a
line is dropped.]],
}

-- Read --pred and --ref; nil, message when unreadable or of unequal length.
local function read_pair(pred_path, ref_path)
  local preds, err = metrics.read_lines(pred_path)
  if not preds then return nil, nil, ("dqbart rouge: cannot read --pred: %s"):format(err) end
  local refs, err2 = metrics.read_lines(ref_path)
  if not refs then return nil, nil, ("dqbart rouge: cannot read --ref: %s"):format(err2) end
  if #preds ~= #refs then
    return nil, nil, ("dqbart rouge: line counts differ: --pred %s has %d lines, --ref %s has %d lines")
      :format(pred_path, #preds, ref_path, #refs)
  end
  if #preds == 0 then return nil, nil, ("dqbart rouge: %s and %s are empty"):format(pred_path, ref_path) end
  return preds, refs
end

local function run(argv)
  local opts, code = args.parse(argv, spec)
  if not opts then return code end
  local preds, refs, err = read_pair(opts.pred, opts.ref)
  if not preds then
    io.stderr:write(err, "\n")
    return 1
  end
  local types = {}
  for name in opts.types:gmatch("[^,%s]+") do types[#types + 1] = name end
  if opts.bootstrap < 0 or opts.bootstrap % 1 ~= 0 then
    io.stderr:write("dqbart rouge: --bootstrap must be a whole number >= 0\n")
    return 2
  end
  local ok, result = pcall(metrics.rouge, preds, refs, {
    stem = not opts.no_stem,
    types = types,
    sentence_sep = opts.lsum_sep,
    split_sentences = opts.split_sentences,
    bootstrap = opts.bootstrap > 0 and opts.bootstrap or nil,
    confidence = opts.confidence,
    seed = opts.seed,
  })
  if not ok then
    io.stderr:write("dqbart rouge: ", (tostring(result):gsub("^[^:]*:%d+: ", "")), "\n")
    return 1
  end
  result.stem = not opts.no_stem
  result.lsum_sep = opts.lsum_sep
  result.split_sentences = opts.split_sentences
  result.reference = "rouge-score 0.1.2 (nltk PorterStemmer, NLTK_EXTENSIONS)"
  local order = { "count", "types" }
  for _, t in ipairs(types) do order[#order + 1] = t end
  for _, k in ipairs({ "p", "r", "f", "low", "mid", "high" }) do order[#order + 1] = k end
  io.write(metrics.to_json(result, order), "\n")
  return 0
end

return { summary = spec.summary, run = run }
