-- dqbart eval: generate for a data file, score against its references
-- (ROUGE or BLEU) and report the model's size, in one go (JSON, then a
-- table for people).
local args = require("dqbart.cli.args")
local gen_cli = require("dqbart.cli.gen_common")

local spec = {
  command = "eval",
  summary = "Generate, score (ROUGE or BLEU) and report the size of a model on a data file (JSON and a table).",
  options = gen_cli.options({
    { "--target", metavar = "NAME", default = "summary", help = "reference field (as --field)" },
    { "--metric", metavar = "M", choices = { "rouge", "bleu" },
      help = "rouge (rouge-score with stemming; rougeLsum on sentence-split text) or bleu (sacreBLEU) "
        .. "[default: rouge, or the recipe's task]" },
    { "--recipe", metavar = "R",
      help = "take data fields, metric, generation settings, source length and quantization from a recipe" },
    { "--pred", metavar = "FILE", help = "also write the predictions there, one per line" },
    { "--json", flag = true, help = "print the JSON report only" },
  }),
  epilog = [[
Prints one JSON object (metric values as F-measure x 100 for ROUGE or the
sacreBLEU score, count, generation settings and speed, size as `dqbart size`
counts it under --quant) and, unless --json, a table. ROUGE is rouge-score's
with the Porter stemmer; for rougeLsum each text is split into sentences by
dq.metrics' rule-based splitter (nltk's punkt differs on rare cases).

With --recipe, the recipe's task supplies the data fields and the metric,
its eval section the generation settings, data.max_source_length the source
truncation and quant.bits / quant.clip the quantization; options given on
the command line win. The model directory is the checkpoint to score: a
student saved by a run keeps its latent full-precision weights and its
quantization plan (dqbart_quant.json), which applies unless --quant or a
recipe says otherwise (--quant 32-32-32: the latent weights unquantized).]],
}

local function recipe_defaults(path, opts)
  local r = require("dqbart.recipe").load(path)
  local task = require("dqbart.recipe").TASKS[r.task] or {}
  local e = r.eval
  local d = {
    generation = { num_beams = e.beams, length_penalty = e.length_penalty, max_length = e.max_length,
      min_length = e.min_length, no_repeat_ngram_size = e.no_repeat_ngram_size, early_stopping = e.early_stopping },
    max_source_length = r.data.max_source_length,
    metric = (e.metric == "bleu" or task.metric == "bleu") and "bleu" or "rouge",
    field = r.data.source, target = r.data.target, format = r.data.format,
  }
  if r.quant.enabled and r.quant.bits ~= "32-32-32" then
    d.quant = r.quant.bits
    d.quant_opts = { clip = r.quant.clip }
  end
  return d
end

local function report(job, scores, size, opts, metric)
  local g = scores.generation
  local out = {
    model = opts.model, data = opts.data, count = scores.count, metric = scores.metric,
    quant = job.quant or "32-32-32",
    generation = { num_beams = g.options.num_beams, max_length = g.options.max_length,
      min_length = g.options.min_length, length_penalty = g.options.length_penalty,
      no_repeat_ngram_size = g.options.no_repeat_ngram_size, early_stopping = g.options.early_stopping,
      do_sample = g.options.do_sample, seconds = g.seconds, new_tokens = g.new_tokens,
      tokens_per_second = g.tokens_per_second },
    size = { mib = size.mib, bytes = size.bytes, ratio = size.ratio, teacher_mib = size.teacher_mib,
      bits = require("dqbart.quant_plan").format(size.bits) },
  }
  if metric == "bleu" then
    out.bleu = scores.bleu
    out.signature = scores.details.bleu.signature
  else
    for _, k in ipairs({ "rouge1", "rouge2", "rougeL", "rougeLsum" }) do out[k] = scores[k] end
  end
  print(require("dqbart.metrics").to_json(out))
  if opts.json then return end
  print(("%-12s %s"):format("model", opts.model))
  print(("%-12s %s (%d examples)"):format("data", opts.data, scores.count))
  if metric == "bleu" then
    print(("%-12s %.2f  (%s)"):format("BLEU", scores.bleu, out.signature))
  else
    print(("%-12s %8s %8s %8s %9s"):format("ROUGE (F)", "R-1", "R-2", "R-L", "R-Lsum"))
    print(("%-12s %8.2f %8.2f %8.2f %9.2f"):format("", scores.rouge1, scores.rouge2, scores.rougeL, scores.rougeLsum))
  end
  print(("%-12s %s: %.1f MiB, %.1fx smaller than %.1f MiB at 32-32-32"):format("size", out.size.bits, size.mib,
    size.ratio, size.teacher_mib))
  local how = g.options.do_sample and "sampling"
    or ("%d beams, length penalty %g"):format(g.options.num_beams, g.options.length_penalty)
  print(("%-12s %s, max_length %d, min_length %d: %d new tokens in %.1f s (%.1f tokens/s)"):format("generation",
    how, g.options.max_length, g.options.min_length, g.new_tokens, g.seconds, g.tokens_per_second))
end

local function run(argv)
  local opts, code = args.parse(argv, spec)
  if not opts then return code end
  local ok, err = pcall(function()
    local defaults
    if opts.recipe then
      defaults = recipe_defaults(opts.recipe, opts)
      -- the recipe's fields apply unless given on the command line
      for _, a in ipairs(argv) do
        if a:match("^%-%-field") then defaults.field = nil end
        if a:match("^%-%-target") then defaults.target = nil end
        if a:match("^%-%-format") then defaults.format = nil end
      end
      opts.field = defaults.field or opts.field
      opts.target = defaults.target or opts.target
      opts.format = defaults.format or opts.format
    end
    local metric = opts.metric or (defaults and defaults.metric) or "rouge"
    local job = gen_cli.prepare(opts, "eval", defaults)
    local sources, refs = gen_cli.read_texts(opts.data, opts, opts.target)
    local evaluate = require("dqbart.evaluate")
    local gen = {}
    for k, v in pairs(job.gen) do gen[k] = v end
    gen.metric = metric
    gen.batch_size = job.batch_size
    gen.max_source_length = job.max_source_length
    gen.progress = gen_cli.reporter(#sources, opts.quiet, "dqbart eval")
    local examples = { sources = sources, targets = refs }
    local scores = evaluate.run(job.model, job.tokenizer, examples, gen)
    if opts.pred then gen_cli.write_lines(opts.pred, scores.predictions) end
    local size = require("dqbart.size").report(require("dqbart.config").load(opts.model),
      { bits = job.quant or "32-32-32" })
    report(job, scores, size, opts, metric)
    job.model:free()
  end)
  if not ok then
    io.stderr:write("dqbart eval: ", tostring(err):gsub("^[^:]*%.lua:%d+: ", ""), "\n")
    return 1
  end
  return 0
end

return { summary = spec.summary, run = run }
