-- dqbart.model: BART / mBART models (engine/dqbart_model.h) as Lua objects.
--
--   local m = dq.model.load(dir, { device = "cuda", dtype = "bf16" })  -- cpu/f32 by default
--   local m = dq.model.new({ model_type = "bart", d_model = 768, ... }, opts)  -- zero weights
--   m:train() / m:eval()                      -- mode (eval on load)
--   m:set_dropout{ dropout = 0, attention_dropout = 0, activation_dropout = 0 }
--   m:set_rng(seed, offset) ; m:rng() -> seed, offset
--   m:forward{ input_ids = ids, attention_mask = am,         -- [B, S]
--              decoder_input_ids = dids, decoder_attention_mask = dam,  -- [B, T]
--              output_hidden_states = true, output_attentions = true }  -- (eval mode)
--   m:output(kind, index)        -- a view of one output of the last forward
--   m:outputs()                  -- { logits = t, ["encoder_hidden_states.0"] = t, ... }
--   m:output_grad(kind, index)   -- its gradient buffer (training mode; zeroed by each
--                                -- forward; losses write or add dL/d output there)
--   m:backward()                 -- gradients of every parameter, added into m:grads()
--   m:zero_grad()
--   m:params() / m:grads()       -- the whole f32 buffers (1-d)
--   m:param(name_or_index) / m:grad(name_or_index)   -- views; indices 1-based
--   m:param_names()              -- transformers names, buffer order
--   m:save(dir) ; m:load_weights(path)   -- a model.safetensors into this model
--   m:student{ encoder_layers = { 0, 2, 5 }, decoder_layers = { 5 } }
--   m:set_quant("2-2-8", { clip = 2.5 })  -- a DQ-BART student: quantized weights, embedding,
--                                        -- activations (engine/dqbart_model_quant.h); nil: off
--   m:quantize_weights()        -- recompute the quantized weights: once per training step
--   m:quant()                   -- the plan in force and counts (weight_updates, ...)
--   m:working_param(name_or_index)  -- a weight as the forward reads it (quantized)
--   m:info(), m:config(), m:free()
--   dq.model.cross_entropy(logits, labels, { ignore_index = -100, grad = t, scale = 1,
--                                             accumulate = false }) -> loss (0-d f32 tensor)
--
-- Output kinds are the names transformers gives them: "logits",
-- "encoder_hidden_states", "decoder_hidden_states", "encoder_attentions",
-- "decoder_attentions", "cross_attentions". Output indices and layer
-- numbers are transformers' (0-based: hidden state 0 is the embedding
-- output, layer 0 the first layer), as in parameter names and in the files
-- `dqbart forward` writes.
local core = require("dqbart.ffi")
local tensor = require("dqbart.tensor")
local ffi, C, check = core.ffi, core.C, core.check

local M = {}

local Model = {}
Model.__index = Model

local handle_box = ffi.typeof("dq_model*[1]")
local info_ct = ffi.typeof("dq_model_info")
local config_ct = ffi.typeof("dq_bart_config")
local u64_box = ffi.typeof("uint64_t[1]")
local i32_box = ffi.typeof("int32_t[1]")
local str_box = ffi.typeof("const char*[1]")

local kinds = {
  logits = 0,
  encoder_hidden_states = 1,
  decoder_hidden_states = 2,
  encoder_attentions = 3,
  decoder_attentions = 4,
  cross_attentions = 5,
}
local kind_names = { [0] = "logits", "encoder_hidden_states", "decoder_hidden_states", "encoder_attentions",
  "decoder_attentions", "cross_attentions" }
M.output_kinds = kinds

local function wrap(ptr)
  return setmetatable({ handle = ffi.gc(ptr, C.dq_model_free) }, Model)
end

local function live(self, level)
  if not self.handle then error("model: used after free()", (level or 1) + 1) end
  return self.handle
end

function M.load(dir, opts)
  if type(dir) ~= "string" then error("model.load: expected a checkpoint directory", 2) end
  opts = opts or {}
  local device = tensor.device_id(opts.device, 2)
  local dtype = tensor.dtype_id(opts.dtype or "f32", 2)
  local box = handle_box()
  check(C.dq_model_load(box, dir, device, dtype), 2)
  return wrap(box[0])
end

-- A model with every parameter zero, from a checkpoint directory's
-- config.json or from a config table (dq.config's keys; unset keys take
-- transformers' defaults).
function M.new(config, opts)
  opts = opts or {}
  local device = tensor.device_id(opts.device, 2)
  local dtype = tensor.dtype_id(opts.dtype or "f32", 2)
  local dir, temporary = config, false
  if type(config) == "table" then
    dir = os.tmpname()
    os.remove(dir)
    require("dqbart.config").save(dir, config)
    temporary = true
  elseif type(config) ~= "string" then
    error("model.new: expected a config table or a directory holding config.json", 2)
  end
  local box = handle_box()
  local status = C.dq_model_init(box, dir, device, dtype)
  if temporary then
    os.remove(dir .. "/config.json")
    os.remove(dir .. "/generation_config.json")
    os.remove(dir)
  end
  check(status, 2)
  return wrap(box[0])
end

function Model:free()
  if self.handle then
    local h = self.handle
    self.handle = nil
    ffi.gc(h, nil)
    C.dq_model_free(h)
  end
end

function Model:info()
  local i = info_ct()
  check(C.dq_model_get_info(live(self, 2), i), 2)
  return {
    model_type = i.is_mbart ~= 0 and "mbart" or "bart",
    vocab_size = i.vocab_size, d_model = i.d_model,
    encoder_layers = i.encoder_layers, decoder_layers = i.decoder_layers,
    encoder_heads = i.encoder_heads, decoder_heads = i.decoder_heads,
    encoder_ffn_dim = i.encoder_ffn_dim, decoder_ffn_dim = i.decoder_ffn_dim,
    max_position_embeddings = i.max_position_embeddings,
    device = tensor.device_name(i.device), dtype = tensor.dtype_names[i.dtype],
    training = i.training ~= 0,
    num_params = i.num_params, numel = tonumber(i.numel), trainable_numel = tonumber(i.trainable_numel),
    arena_bytes = tonumber(i.arena_bytes),
    batch = tonumber(i.batch), source_len = tonumber(i.source_len), target_len = tonumber(i.target_len),
  }
end

-- The configuration as config.json has it (the common keys).
function Model:config()
  local c = config_ct()
  check(C.dq_model_get_config(live(self, 2), c), 2)
  local t = { model_type = ffi.string(c.model_type), activation_function = ffi.string(C.dq_activation_name(c.activation)) }
  for _, k in ipairs({ "vocab_size", "d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads",
    "decoder_attention_heads", "encoder_ffn_dim", "decoder_ffn_dim", "max_position_embeddings" }) do
    t[k] = tonumber(c[k])
  end
  for _, k in ipairs({ "dropout", "attention_dropout", "activation_dropout" }) do t[k] = tonumber(c[k]) end
  for _, k in ipairs({ "pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id" }) do
    local v = tonumber(c[k])
    t[k] = v >= 0 and v or false
  end
  t.scale_embedding = c.scale_embedding ~= 0
  return t
end

-- ---- mode, dropout ---------------------------------------------------------------------

function Model:train(on)
  check(C.dq_model_set_training(live(self, 2), on == false and 0 or 1), 2)
  return self
end

function Model:eval()
  check(C.dq_model_set_training(live(self, 2), 0), 2)
  return self
end

function Model:set_dropout(p)
  local c = config_ct()
  check(C.dq_model_get_config(live(self, 2), c), 2)
  p = p or {}
  check(C.dq_model_set_dropout(self.handle, p.dropout or c.dropout, p.attention_dropout or c.attention_dropout,
    p.activation_dropout or c.activation_dropout), 2)
  return self
end

function Model:set_rng(seed, offset)
  check(C.dq_model_set_dropout_rng(live(self, 2), seed or 0, offset or 0), 2)
  return self
end

function Model:rng()
  local s, o = u64_box(), u64_box()
  check(C.dq_model_get_dropout_rng(live(self, 2), s, o), 2)
  return s[0], o[0]
end

-- ---- running ----------------------------------------------------------------------------

local function optional(t)
  if t == nil or t == false then return nil end
  if not tensor.is_tensor(t) then error("model.forward: masks must be tensors", 3) end
  return t
end

function Model:forward(batch)
  if type(batch) ~= "table" then error("model:forward: expected a table { input_ids = ..., decoder_input_ids = ... }", 2) end
  for _, k in ipairs({ "input_ids", "decoder_input_ids" }) do
    if not tensor.is_tensor(batch[k]) then error(("model:forward: %s must be a tensor"):format(k), 2) end
  end
  local flags = (batch.output_hidden_states and C.DQ_FORWARD_HIDDEN_STATES or 0) +
      (batch.output_attentions and C.DQ_FORWARD_ATTENTIONS or 0)
  check(C.dq_model_forward(live(self, 2), batch.input_ids, optional(batch.attention_mask), batch.decoder_input_ids,
    optional(batch.decoder_attention_mask), flags), 2)
  return self
end

local function kind_id(kind, level)
  local k = kinds[kind]
  if not k then
    error(("unknown output %s (expected logits, encoder_hidden_states, decoder_hidden_states, " ..
      "encoder_attentions, decoder_attentions or cross_attentions)"):format(tostring(kind)), level + 1)
  end
  return k
end

function Model:num_outputs(kind)
  local n = i32_box()
  check(C.dq_model_num_outputs(live(self, 2), kind_id(kind, 2), n), 2)
  return n[0]
end

function Model:output(kind, index)
  local t = tensor.undefined()
  check(C.dq_model_output(live(self, 2), kind_id(kind, 2), index or 0, t), 2)
  return t
end

function Model:output_grad(kind, index)
  local t = tensor.undefined()
  check(C.dq_model_output_grad(live(self, 2), kind_id(kind, 2), index or 0, t), 2)
  return t
end

-- Every output the last forward kept, named as `dqbart forward` writes them.
function Model:outputs()
  local h = live(self, 2)
  local out, n = {}, i32_box()
  for k = 0, #kind_names do
    check(C.dq_model_num_outputs(h, k, n), 2)
    for i = 0, n[0] - 1 do
      local t = tensor.undefined()
      if C.dq_model_output(h, k, i, t) == 0 then
        out[k == 0 and "logits" or (kind_names[k] .. "." .. i)] = t
      else
        C.dq_clear_error()
      end
    end
  end
  return out
end

function Model:backward()
  check(C.dq_model_backward(live(self, 2)), 2)
  return self
end

function Model:zero_grad()
  check(C.dq_model_zero_grad(live(self, 2)), 2)
  return self
end

-- ---- parameters ---------------------------------------------------------------------------

function Model:num_params()
  local i = info_ct()
  check(C.dq_model_get_info(live(self, 2), i), 2)
  return i.num_params
end

local function param_index(self, p, level)
  if type(p) == "number" then return p - 1 end
  if type(p) ~= "string" then error("model: a parameter is a name or a 1-based index", level + 1) end
  local i = i32_box()
  check(C.dq_model_param_index(self.handle, p, i), level + 1)
  return i[0]
end

function Model:param_names()
  local h = live(self, 2)
  local names, s = {}, str_box()
  for i = 0, self:num_params() - 1 do
    check(C.dq_model_param_name(h, i, s), 2)
    names[i + 1] = ffi.string(s[0])
  end
  return names
end

function Model:trainable(p)
  local t = i32_box()
  check(C.dq_model_param_trainable(live(self, 2), param_index(self, p, 2), t), 2)
  return t[0] ~= 0
end

function Model:param(p)
  live(self, 2)
  local t = tensor.undefined()
  check(C.dq_model_param(self.handle, param_index(self, p, 2), t), 2)
  return t
end

function Model:grad(p)
  live(self, 2)
  local t = tensor.undefined()
  check(C.dq_model_grad(self.handle, param_index(self, p, 2), t), 2)
  return t
end

function Model:params()
  local t = tensor.undefined()
  check(C.dq_model_params(live(self, 2), t), 2)
  return t
end

function Model:grads()
  local t = tensor.undefined()
  check(C.dq_model_grads(live(self, 2), t), 2)
  return t
end

-- Tell the model its weights changed (an optimizer step) before an eval
-- forward in bf16 mode; training forwards refresh on their own.
function Model:params_changed()
  check(C.dq_model_params_changed(live(self, 2)), 2)
  return self
end

-- ---- files, students ----------------------------------------------------------------------

-- A quantized student's plan travels with its latent weights in this file,
-- so that loading the directory for generation or evaluation quantizes
-- them as the run that saved it did.
M.QUANT_FILE = "dqbart_quant.json"

local function write_quant_file(dir, record)
  local path = dir .. "/" .. M.QUANT_FILE
  if not record then
    os.remove(path) -- a plan from an earlier save would no longer be true
    return
  end
  local tmp = path .. ".tmp"
  local f, err = io.open(tmp, "wb")
  if not f then error(("model:save: cannot write %s"):format(err), 3) end
  local wrote, werr = f:write(require("cjson").encode(record), "\n")
  local closed, cerr = f:close()
  if not (wrote and closed) then
    os.remove(tmp)
    error(("model:save: writing %s failed: %s"):format(tmp, tostring(werr or cerr)), 3)
  end
  local ok, why = os.rename(tmp, path)
  if not ok then os.remove(tmp); error(("model:save: cannot rename %s: %s"):format(tmp, tostring(why)), 3) end
end

function Model:save(dir)
  if type(dir) ~= "string" then error("model:save: expected a directory", 2) end
  check(C.dq_model_save(live(self, 2), dir), 2)
  write_quant_file(dir, self.quant_spec and { bits = self:quant().bits, spec = self.quant_spec,
    opts = self.quant_opts })
  return self
end

-- Copy the weights of a model.safetensors (a checkpoint this model's
-- save wrote, or one of the same architecture) into the model. Tensors the
-- file lacks keep their values, except trainable ones: their absence is an
-- error naming the file and the tensor.
function Model:load_weights(path)
  live(self, 2)
  local f = require("dqbart.safetensors").open(path)
  for i, name in ipairs(self:param_names()) do
    if f:contains(name) then
      local view = self:param(i)
      local ok, err = pcall(f.tensor, f, name, view)
      view:free()
      if not ok then f:close(); error(err, 0) end
    elseif self:trainable(i) then
      f:close()
      error(("model:load_weights: %s has no tensor %s"):format(path, name), 2)
    end
  end
  f:close()
  return self:params_changed()
end

-- The quantization plan saved with a student: spec, opts for set_quant, and
-- the W-E-A bits; nil when the directory has none.
function M.saved_quant(dir)
  local path = dir .. "/" .. M.QUANT_FILE
  local f = io.open(path, "rb")
  if not f then return nil end
  local text = f:read("*a")
  f:close()
  local ok, record = pcall(require("cjson").decode, text)
  if not ok or type(record) ~= "table" or record.spec == nil then
    error(("%s: not a quantization plan (expected a JSON object with \"spec\"): %s"):format(path,
      ok and "no spec" or tostring(record)), 2)
  end
  return record.spec, record.opts, record.bits
end

local function layer_list(list, what)
  if type(list) ~= "table" or #list == 0 then
    error(("model:student: %s must be a non-empty list of teacher layer numbers (0-based)"):format(what), 3)
  end
  local arr = ffi.new("int32_t[?]", #list)
  for i, v in ipairs(list) do
    if type(v) ~= "number" or v % 1 ~= 0 then
      error(("model:student: %s[%d] is %s; expected a layer number"):format(what, i, tostring(v)), 3)
    end
    arr[i - 1] = v
  end
  return arr, #list
end

-- A student copying the listed teacher layers (0-based layer numbers, in
-- student order; see dq.select for the default maps).
function Model:student(spec)
  if type(spec) ~= "table" then error("model:student: expected { encoder_layers = {...}, decoder_layers = {...} }", 2) end
  local enc, ne = layer_list(spec.encoder_layers, "encoder_layers")
  local dec, nd = layer_list(spec.decoder_layers, "decoder_layers")
  local box = handle_box()
  check(C.dq_model_student(box, live(self, 2), enc, ne, dec, nd), 2)
  return wrap(box[0])
end

-- ---- quantization (engine/dqbart_model_quant.h) -------------------------------------------
--
-- m:set_quant(spec, opts) puts the model under a DQ-BART plan; spec is
-- "W-E-A" ("2-2-8", "8-8-8"; each 2..8, 16 or 32 = off) or a table with
-- per-role and per-module overrides (dq.quant.model_plan documents it;
-- the output of dq.quant.plan is one); opts.clip replaces every role's clip
-- (2.5). nil, false or "32-32-32" returns the model to full precision
-- exactly. The parameters stay the latent full-precision weights; the
-- forward reads quantized copies of the planned weights and the embedding,
-- and quantizes activations as it goes. Gradients are those of the latent
-- weights (straight-through estimator with clipping).
--
-- When the quantized weights are computed: m:quantize_weights() computes
-- them now. A training loop calls it once per step (before the step's first
-- forward, after the previous optimizer step); from the first call on, the
-- micro-batches of a step all use that one quantization. Without that call
-- (or in addition), a forward recomputes them whenever the latent weights
-- may have changed: after set_quant, params_changed, param/params views,
-- train/eval switches and, until quantize_weights was first called, after
-- every backward. m:quant().weight_updates counts the computations.
local bit = require("bit")

local function fill_role(dst, role)
  if not role then
    dst.bits = 32
    return
  end
  local spec = require("dqbart.quant").spec(role, 3)
  dst.bits, dst.method, dst.granularity, dst.clip = role.bits, spec.method, spec.granularity, spec.clip
end

local QL = {
  q = C.DQ_QL_SELF_Q, k = C.DQ_QL_SELF_K, v = C.DQ_QL_SELF_V, out = C.DQ_QL_SELF_OUT,
  cross_q = C.DQ_QL_CROSS_Q, cross_k = C.DQ_QL_CROSS_K, cross_v = C.DQ_QL_CROSS_V, cross_out = C.DQ_QL_CROSS_OUT,
  fc1 = C.DQ_QL_FC1, fc2 = C.DQ_QL_FC2,
}
local QL_SELF = { query = C.DQ_QL_SELF_QUERY, key = C.DQ_QL_SELF_KEY, probs = C.DQ_QL_SELF_PROBS,
  values = C.DQ_QL_SELF_VALUE }
local QL_CROSS = { query = C.DQ_QL_CROSS_QUERY, key = C.DQ_QL_CROSS_KEY, probs = C.DQ_QL_CROSS_PROBS,
  values = C.DQ_QL_CROSS_VALUE }

local function layer_flags(layers)
  local arr = ffi.new("int32_t[?]", math.max(#layers, 1))
  for i, l in ipairs(layers) do
    local f = 0
    for name in pairs(l.linears) do f = bit.bor(f, QL[name]) end
    for name in pairs(l.attention) do f = bit.bor(f, QL_SELF[name]) end
    for name in pairs(l.cross_attention or {}) do f = bit.bor(f, QL_CROSS[name]) end
    arr[i - 1] = f
  end
  return arr
end

function Model:set_quant(spec, opts)
  local h = live(self, 2)
  if spec == nil or spec == false then
    check(C.dq_model_set_quant(h, nil), 2)
    self.quant_plan, self.quant_spec, self.quant_opts = nil, nil, nil
    return self
  end
  local i = self:info()
  local plan = require("dqbart.quant_plan").model_plan(spec, opts,
    { encoder = i.encoder_layers, decoder = i.decoder_layers }, 2)
  local p = ffi.new("dq_model_quant_plan")
  fill_role(p.weight, plan.weight)
  fill_role(p.embedding, plan.embedding)
  fill_role(p.activation, plan.activation)
  local enc, dec = layer_flags(plan.encoder), layer_flags(plan.decoder)
  p.encoder_layers, p.decoder_layers = enc, dec
  p.num_encoder_layers, p.num_decoder_layers = #plan.encoder, #plan.decoder
  check(C.dq_model_set_quant(h, p), 2)
  self.quant_plan, self.quant_spec, self.quant_opts = plan, spec, opts
  return self
end

function Model:quantize_weights()
  check(C.dq_model_quantize_weights(live(self, 2)), 2)
  return self
end

local quant_info_ct = ffi.typeof("dq_model_quant_info")
local method_names = { [tonumber(C.DQ_QUANT_AUTO)] = "auto", [tonumber(C.DQ_QUANT_SYM)] = "sym",
  [tonumber(C.DQ_QUANT_TWN)] = "twn", [tonumber(C.DQ_QUANT_BWN)] = "bwn", [tonumber(C.DQ_QUANT_ASYM)] = "asym" }
local granularity_names = { [tonumber(C.DQ_QUANT_PER_TENSOR)] = "tensor", [tonumber(C.DQ_QUANT_PER_ROW)] = "row" }

local function role_table(r)
  if r.bits == 32 then return false end
  return { bits = r.bits, method = method_names[tonumber(r.method)], granularity = granularity_names[tonumber(
    r.granularity)], clip = tonumber(r.clip) }
end

-- The plan in force: { active, bits = "W-E-A", weight/embedding/activation
-- = role or false, plan = the resolved plan (set_quant's), counts }.
function Model:quant()
  local q = quant_info_ct()
  check(C.dq_model_get_quant(live(self, 2), q), 2)
  local out = {
    active = q.active ~= 0, caller_schedules = q.caller_schedules ~= 0,
    weight = role_table(q.weight), embedding = role_table(q.embedding), activation = role_table(q.activation),
    quantized_weights = q.quantized_weights, quantized_weight_numel = tonumber(q.quantized_weight_numel),
    quantized_embedding_numel = tonumber(q.quantized_embedding_numel),
    quantized_activations = q.quantized_activations, weight_updates = tonumber(q.weight_updates),
    plan = self.quant_plan,
  }
  out.bits = ("%d-%d-%d"):format(q.weight.bits, q.embedding.bits, q.activation.bits)
  return out
end

function Model:working_param(p)
  live(self, 2)
  local t = tensor.undefined()
  check(C.dq_model_working_param(self.handle, param_index(self, p, 2), t), 2)
  return t
end

function Model:__tostring()
  if not self.handle then return "model(freed)" end
  local i = self:info()
  return ("model(%s, %d+%d layers, d_model %d, %s %s, %s)"):format(i.model_type, i.encoder_layers, i.decoder_layers,
    i.d_model, i.device, i.dtype, i.training and "train" or "eval")
end

-- ---- loss --------------------------------------------------------------------------------------

-- The fused token cross-entropy of dq.loss (engine/dqbart_loss.h) with this
-- module's older option names: scale is the gradient's weight.
function M.cross_entropy(logits, labels, opts)
  opts = opts or {}
  local loss = tensor.undefined()
  local grad = opts.grad
  if grad ~= nil and not tensor.is_tensor(grad) then error("cross_entropy: opts.grad must be a tensor", 2) end
  check(C.dq_loss_cross_entropy(loss, grad, opts.scale or 1, opts.accumulate and C.DQ_LOSS_ADD_GRAD or 0, logits,
    labels, opts.ignore_index or -100, 0), 2)
  return loss
end

M.Model = Model
return M
