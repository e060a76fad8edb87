-- dqbart generate: predictions for a data file, one per line, with a
-- model's generation settings (lib/dqbart/generate.lua does the work).
local args = require("dqbart.cli.args")
local gen_cli = require("dqbart.cli.gen_common")

local spec = {
  command = "generate",
  summary = "Generate predictions for a data file (beam search, greedy or sampling), one per line.",
  options = gen_cli.options({
    { "--out", metavar = "FILE", required = true, help = "predictions, one per line (written atomically)" },
    { "--ids", flag = true,
      help = "--data holds space-separated source token ids per line; write generated ids (start token included)" },
  }),
  epilog = [[
Each prediction is one line: the decoded text with special tokens skipped,
newlines inside it replaced by a space and surrounding space stripped. With
--ids the input is plain text, one source per line as space-separated token
ids, and each output line is the generated sequence as ids: the decoder
start token, the generated tokens and EOS when one ended it, no padding
(transformers' generate output row without its padding; the contract parity
checks use).

Sources are sorted by length for batching (less padding) and the output is
in the input order. Generation settings not given take the model's own
(generation_config.json, else config.json, else transformers' defaults),
as transformers' generate does. --quant W-E-A runs the model as a DQ-BART
student under that plan (quantized weights, embedding and activations;
32 = off); without it, a student saved by a run uses the plan saved with
it (dqbart_quant.json). Progress goes to stderr: a bar on a terminal, else
a line per 10% of the sources.]],
}

local function run(argv)
  local opts, code = args.parse(argv, spec)
  if not opts then return code end
  local ok, err = pcall(function()
    local job = gen_cli.prepare(opts, "generate")
    local sources, n = gen_cli.read_sources(job, opts)
    local results = gen_cli.generate(job, opts, sources, n)
    local lines = {}
    for i = 1, n do
      if opts.ids then lines[i] = table.concat(results.sequences[i], " ")
      else lines[i] = results.texts[i] end
    end
    gen_cli.write_lines(opts.out, lines)
    gen_cli.summary(job, results, n, opts.out)
    job.model:free()
  end)
  if not ok then
    io.stderr:write("dqbart generate: ", tostring(err):gsub("^[^:]*%.lua:%d+: ", ""), "\n")
    return 1
  end
  return 0
end

return { summary = spec.summary, run = run }
