-- dqbart size: a model's size under a W-E-A configuration, counted as
-- DQ-BART counts it (lib/dqbart/size.lua), from config.json alone.
local args = require("dqbart.cli.args")
local config = require("dqbart.config")
local size = require("dqbart.size")

local spec = {
  command = "size",
  summary = "Model size in MiB and compression ratio for W-E-A bits and student layers (config.json only).",
  options = {
    { "--model", metavar = "DIR", required = true, help = "checkpoint directory (or its config.json)" },
    { "--bits", metavar = "W-E-A", required = true,
      help = "weight-embedding-activation bits, e.g. 2-2-8, 8-8-8, 32-32-32 (each 2..8, 16 or 32)" },
    { "--encoder-layers", metavar = "N", type = "number", help = "student encoder layers [default: the model's]" },
    { "--decoder-layers", metavar = "M", type = "number", help = "student decoder layers [default: the model's]" },
    { "--json", flag = true, help = "print the report as one JSON object" },
  },
  epilog = [[
Counted at their bit width: the linear weights of every encoder and decoder
layer (W) and the shared token embedding (E, once). At 32 bits: biases,
LayerNorms, positional embeddings and final_logits_bias. The ratio compares
with the model at 32-32-32 with all its layers. Activation bits do not
change the size. MiB = 2^20 bytes.]],
}

local function json(r)
  local keys = { "bits", "encoder_layers", "decoder_layers", "bytes", "mib", "teacher_bytes", "teacher_mib", "ratio",
                 "quantized_linear_params", "embedding_params", "full_precision_params" }
  local parts = {}
  for _, k in ipairs(keys) do
    local v = r[k]
    if k == "bits" then v = '"' .. require("dqbart.quant_plan").format(v) .. '"'
    else v = ("%.17g"):format(v) end
    parts[#parts + 1] = ('"%s": %s'):format(k, v)
  end
  return "{" .. table.concat(parts, ", ") .. "}"
end

local function run(argv)
  local opts, code = args.parse(argv, spec)
  if not opts then return code end
  local ok, report = pcall(function()
    local cfg = config.load(opts.model)
    return size.report(cfg, { bits = opts.bits, encoder_layers = opts.encoder_layers,
                              decoder_layers = opts.decoder_layers })
  end)
  if not ok then
    io.stderr:write("dqbart size: ", tostring(report):gsub("^[^:]*:%d+: ", ""), "\n")
    return 1
  end
  if opts.json then
    print(json(report))
    return 0
  end
  local r = report
  print(("%s, %d encoder + %d decoder layers: %.1f MiB (%.2f MiB, %d bytes)"):format(
    require("dqbart.quant_plan").format(r.bits), r.encoder_layers, r.decoder_layers, r.mib, r.mib,
    math.floor(r.bytes + 0.5)))
  print(("compression: %.1fx against the model at 32-32-32 (%.1f MiB)"):format(r.ratio, r.teacher_mib))
  return 0
end

return { summary = spec.summary, run = run }
