-- dqbart forward: run a model on a batch stored as safetensors and write
-- every output (and with --grads every parameter gradient) as safetensors.
-- This is the contract parity checks use; keep names and semantics stable.
local args = require("dqbart.cli.args")

local spec = {
  command = "forward",
  summary = "Run a BART/mBART model on a batch (safetensors) and write its outputs and gradients (safetensors).",
  options = {
    { "--model", metavar = "DIR", required = true, help = "checkpoint directory (config.json + model.safetensors)" },
    { "--inputs", metavar = "IN", required = true, help = "safetensors with input_ids, decoder_input_ids, ..." },
    { "--out", metavar = "OUT", required = true, help = "safetensors file to write" },
    { "--device", metavar = "DEV", default = "cpu", choices = { "cpu", "cuda" } },
    { "--dtype", metavar = "DTYPE", default = "f32", choices = { "f32", "bf16" },
      help = "activation dtype (bf16 on cuda only)" },
    { "--grads", flag = true, help = "also write grad.<parameter> for every parameter (needs labels)" },
    { "--quant", metavar = "W-E-A", help = "run the model as a DQ-BART student quantized W-E-A (e.g. 2-2-8, 8-8-8; "
      .. "32 = full precision)" },
    { "--clip", metavar = "C", type = "number", help = "clip of every quantizer with --quant [default: 2.5]" },
  },
  epilog = [[
IN holds input_ids and decoder_input_ids ([B, S] and [B, T], integers) and
optionally attention_mask, decoder_attention_mask (1 keep, 0 pad) and labels
([B, T]; -100 is ignored, as in transformers).

OUT holds, as f32: logits; encoder_hidden_states.<i> and
decoder_hidden_states.<i> (i = 0 is the embedding output; for mBART the last
is after the final layer_norm); encoder_attentions.<i>,
decoder_attentions.<i>, cross_attentions.<i> (after softmax); loss (mean
token cross-entropy, when labels are given); with --grads,
grad.<parameter name> for every trainable parameter, the gradient of loss.

Dropout is off: outputs come from an eval-mode forward, gradients from a
training-mode forward with every dropout probability 0, so both are
deterministic.

With --quant the model runs under the reference's quantization plan
(DQBART.md section 2): quantized layer weights (TWN at 2 bits, else
symmetric, per tensor), token embedding (per row) and activations, the LM
head in full precision; every quantizer clips to [-C, C]. The outputs are
the quantized model's, and grad.<parameter> are the gradients of the latent
(full-precision) weights through the straight-through estimator.]],
}

local function fail(msg)
  io.stderr:write("dqbart forward: ", msg, "\n")
  return 1
end

local function run(argv)
  local opts, code = args.parse(argv, spec)
  if not opts then return code end
  if opts.dtype == "bf16" and opts.device ~= "cuda" then return fail("--dtype bf16 needs --device cuda") end
  if opts.clip and not opts.quant then return fail("--clip needs --quant") end
  local ok, err = pcall(function()
    local inputs_file = dq.safetensors.open(opts.inputs)
    local inputs = inputs_file:tensors()
    for _, k in ipairs({ "input_ids", "decoder_input_ids" }) do
      if not inputs[k] then error(("%s has no tensor %q"):format(opts.inputs, k), 0) end
    end
    if opts.grads and not inputs.labels then error("--grads needs labels in " .. opts.inputs, 0) end
    local m = dq.model.load(opts.model, { device = opts.device, dtype = opts.dtype })
    if opts.quant then m:set_quant(opts.quant, { clip = opts.clip }) end
    if opts.grads then
      m:set_dropout({ dropout = 0, attention_dropout = 0, activation_dropout = 0 }):train()
    else
      m:eval()
    end
    m:forward({
      input_ids = inputs.input_ids, attention_mask = inputs.attention_mask,
      decoder_input_ids = inputs.decoder_input_ids, decoder_attention_mask = inputs.decoder_attention_mask,
      output_hidden_states = true, output_attentions = true,
    })
    local out = {}
    for name, t in pairs(m:outputs()) do out[name] = t:to("f32", "cpu") end
    if inputs.labels then
      local logits = m:output("logits")
      local labels = inputs.labels:to(opts.device)
      local grad = opts.grads and m:output_grad("logits") or nil
      out.loss = dq.model.cross_entropy(logits, labels, { ignore_index = -100, grad = grad }):to("cpu")
      if opts.grads then
        m:zero_grad()
        m:backward()
        for i, name in ipairs(m:param_names()) do
          if m:trainable(i) then out["grad." .. name] = m:grad(i):to("f32", "cpu") end
        end
      end
    end
    dq.safetensors.save(opts.out, out)
    inputs_file:close()
    m:free()
  end)
  if not ok then return fail(tostring(err):gsub("^[^:]*:%d+: ", "")) end
  return 0
end

return { summary = spec.summary, run = run }
