-- dqbart.dq: the DQ-BART training step (DQBART.md sections 1 and 4).
--
-- M.step(ctx) makes one optimizer update from ctx.batches (the micro-batches
-- of gradient accumulation, already on the device). To change the method,
-- copy it into a recipe as `step = function(ctx) ... end` and edit it; a new
-- loss term alone goes in distill.extra_losses:
--   extra_losses = { my_term = function(ctx)    -- once per micro-batch
--     local s = ctx.student
--     return dq.loss.mse(s:output("logits"), ctx.teacher:output("logits"), {
--       grad = s:output_grad("logits"), accumulate = true, weight = 0.5 * ctx.scale })
--   end }
-- A term's value (returned as a 0-d tensor, or written into ctx.values.NAME
-- with add_value) is logged under its name and added to the total loss.
--
-- What the step reads from ctx (lib/dqbart/trainer.lua builds it):
--   student, teacher   models; teacher is nil without distillation (the
--                      quantization-only baseline) and in teacher training
--   batches            micro-batches { input_ids, attention_mask,
--                      decoder_input_ids, decoder_attention_mask, labels }
--   weights            weight of each term (0: off); scale = 1/accumulation
--   values             a 0-d f32 device tensor per term (and grad_norm) for
--                      this update; losses add into them (add_value), the
--                      trainer reads them when it logs: no sync per step
--   pairs              per intermediate term, { student index, teacher index }
--                      pairs of outputs (0-based, as transformers numbers them)
--   teacher_outputs    { output_hidden_states =, output_attentions = } for the
--                      teacher's inference forward (only what the terms need)
--   rng                the run's random stream (dropout masks come from it)
--   temperature        of the kl term
--   optimizer, lr, max_grad_norm, label_smoothing, extra_losses ({ name, fn })
local loss = require("dqbart.loss")
local ops = require("dqbart.ops")

local M = {}

-- Intermediate terms: name, model output kind. The order is fixed (terms
-- that share an injection buffer add into it in this order every step).
M.LAYER_TERMS = {
  { "enc_att", "encoder_attentions" }, { "dec_att", "decoder_attentions" }, { "crs_att", "cross_attentions" },
  { "enc_hid", "encoder_hidden_states" }, { "dec_hid", "decoder_hidden_states" },
}
M.TERMS = { "task", "logits", "kl", "enc_att", "dec_att", "crs_att", "enc_hid", "dec_hid", "enc_hid_last" }

-- The student's dropout masks come from the run's stream: its (seed,
-- offset) before the forward, and the offset the forward advanced to after.
local function seeded_forward(model, batch, rng)
  model:set_rng(rng.seed, rng.offset)
  model:forward(batch)
  local _, offset = model:rng()
  rng.offset = tonumber(offset)
end

-- The teacher's inference forward, asking for hidden states and attention
-- maps only when a term needs them.
local function teacher_forward(ctx, b)
  local inputs = ctx.teacher_outputs
  inputs.input_ids, inputs.attention_mask = b.input_ids, b.attention_mask
  inputs.decoder_input_ids, inputs.decoder_attention_mask = b.decoder_input_ids, b.decoder_attention_mask
  ctx.teacher:forward(inputs)
end

-- What an extra loss returned: a device tensor is added into its slot
-- (unless it is the slot), a number into a host-side sum.
local function add_value(ctx, name, value)
  if type(value) == "number" then
    ctx.host_values[name] = (ctx.host_values[name] or 0) + value
  elseif value ~= nil and not rawequal(value, ctx.values[name]) then
    ops.axpby(ctx.values[name], value, 1, 1)
  end
end

function M.step(ctx)
  local s, t, w, v, scale = ctx.student, ctx.teacher, ctx.weights, ctx.values, ctx.scale
  s:zero_grad()
  if s.quantize_weights then s:quantize_weights() end -- once per update: the forwards use the quantized copy
  for _, b in ipairs(ctx.batches) do
    ctx.batch = b
    if t then teacher_forward(ctx, b) end
    seeded_forward(s, b, ctx.rng)
    local logits, dlogits = s:output("logits"), s:output_grad("logits")
    if w.task > 0 then
      loss.cross_entropy(logits, b.labels, { grad = dlogits, accumulate = true, weight = w.task * scale,
        value = v.task, add_value = true, label_smoothing = ctx.label_smoothing })
    end
    if t and w.logits > 0 then
      loss.mse(logits, t:output("logits"), { grad = dlogits, accumulate = true, weight = w.logits * scale,
        value = v.logits, add_value = true })
    end
    if t and w.kl > 0 then -- beyond the reference: T^2 KL(teacher || student) at temperature T, label rows only
      loss.kl(logits, t:output("logits"), { grad = dlogits, accumulate = true, weight = w.kl * scale,
        value = v.kl, add_value = true, labels = b.labels, temperature = ctx.temperature })
    end
    for _, term in ipairs(t and M.LAYER_TERMS or {}) do
      local name, kind = term[1], term[2]
      for _, p in ipairs(w[name] > 0 and ctx.pairs[name] or {}) do
        loss.mse(s:output(kind, p[1]), t:output(kind, p[2]), { grad = s:output_grad(kind, p[1]),
          accumulate = true, weight = w[name] * scale, value = v[name], add_value = true })
      end
    end
    if t and w.enc_hid_last > 0 then -- the reference's per-sample MSE of the last encoder state
      local p = ctx.pairs.enc_hid_last[1]
      loss.mse_per_sample(s:output("encoder_hidden_states", p[1]), t:output("encoder_hidden_states", p[2]), {
        grad = s:output_grad("encoder_hidden_states", p[1]), accumulate = true, weight = w.enc_hid_last * scale,
        value = v.enc_hid_last, add_value = true })
    end
    for _, e in ipairs(ctx.extra_losses) do add_value(ctx, e[1], e[2](ctx)) end
    s:backward()
  end
  -- AdamW on the latent weights; clipping and the non-finite check stay on the device.
  local norm = ctx.optimizer:step({ lr = ctx.lr, max_grad_norm = ctx.max_grad_norm })
  if norm and v.grad_norm then v.grad_norm:copy_(norm) end
end

-- The output pairs of the intermediate terms (DQBART.md section 4) for the
-- student's layer maps (0-based teacher layers, in student order):
-- attention of student layer i pairs with teacher layer m[i]; hidden
-- state 0 (the embedding output) with teacher state 0, student state i >= 1
-- (the output of its layer i) with teacher state m[i] + 1.
function M.layer_pairs(encoder_map, decoder_map, teacher_encoder_layers)
  local function attention(m)
    local out = {}
    for i, t in ipairs(m) do out[i] = { i - 1, t } end
    return out
  end
  local function hidden(m)
    local out = { { 0, 0 } }
    for i, t in ipairs(m) do out[i + 1] = { i, t + 1 } end
    return out
  end
  return {
    enc_att = attention(encoder_map), dec_att = attention(decoder_map), crs_att = attention(decoder_map),
    enc_hid = hidden(encoder_map), dec_hid = hidden(decoder_map),
    -- the last encoder state of each model
    enc_hid_last = { { #encoder_map, teacher_encoder_layers } },
  }
end

-- `dqbart RECIPE`: teacher (trained first when the recipe says so),
-- student, the loop, the report (lib/dqbart/trainer_run.lua).
function M.run(r, info, opts)
  return require("dqbart.trainer_run").run(r, info, opts)
end

return M
