-- dqbart.config: config.json / generation_config.json of BART and mBART
-- checkpoints (engine/dqbart_io.h) as Lua tables.
--
--   dq.config.load(dir)        -> table (dir: a checkpoint directory or its config.json)
--   dq.config.defaults(type)   -> table of transformers' defaults for "bart" / "mbart"
--   dq.config.save(dir, table) -> config.json + generation_config.json, atomically
--
-- Keys are those of config.json (d_model, activation_function, ...) plus
-- normalize_before, add_final_layer_norm and layer_norm_eps (what the
-- model_type implies) and `generation`, a table with num_beams,
-- length_penalty, min_length, max_length, no_repeat_ngram_size,
-- early_stopping (true, false or "never") and the generation token ids.
-- A null token id is `false`. save starts from the defaults of
-- table.model_type, so a partial table works; an unknown key is an error.
local core = require("dqbart.ffi")
local suggest = require("dqbart.suggest")
local ffi, C, check = core.ffi, core.C, core.check

local M = {}

local config_ct = ffi.typeof("dq_bart_config")

-- Fields of dq_bart_config by kind; Lua names equal the C names except
-- activation_function (C: activation).
local model_fields = {
  int = { "vocab_size", "d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads",
    "decoder_attention_heads", "encoder_ffn_dim", "decoder_ffn_dim", "max_position_embeddings" },
  bool = { "scale_embedding", "normalize_before", "add_final_layer_norm", "tie_word_embeddings", "use_cache" },
  float = { "dropout", "attention_dropout", "activation_dropout", "classifier_dropout", "encoder_layerdrop",
    "decoder_layerdrop", "init_std", "layer_norm_eps" },
  token = { "pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id", "forced_eos_token_id" },
}
local generation_fields = {
  int = { "num_beams", "min_length", "max_length", "no_repeat_ngram_size" },
  float = { "length_penalty" },
  token = { "bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id", "forced_bos_token_id",
    "forced_eos_token_id" },
}
local early_stopping_names = { [0] = false, [1] = true, [2] = "never" }

-- ---- struct -> table ------------------------------------------------------------------

local function read_fields(s, fields, out)
  for _, k in ipairs(fields.int or {}) do out[k] = tonumber(s[k]) end
  for _, k in ipairs(fields.bool or {}) do out[k] = s[k] ~= 0 end
  for _, k in ipairs(fields.float or {}) do out[k] = tonumber(s[k]) end
  for _, k in ipairs(fields.token or {}) do
    local v = tonumber(s[k])
    out[k] = v >= 0 and v or false
  end
  return out
end

local function to_table(cfg)
  local t = read_fields(cfg, model_fields, {})
  t.model_type = ffi.string(cfg.model_type)
  t.activation_function = ffi.string(C.dq_activation_name(cfg.activation))
  local g = read_fields(cfg.generation, generation_fields, {})
  g.early_stopping = early_stopping_names[cfg.generation.early_stopping]
  g.from_generation_config = cfg.generation.from_generation_config ~= 0
  t.generation = g
  return t
end

function M.load(dir)
  if type(dir) ~= "string" then error("config.load: expected a checkpoint directory or config.json path", 2) end
  local cfg = config_ct()
  check(C.dq_bart_config_load(cfg, dir), 2)
  return to_table(cfg)
end

function M.defaults(model_type)
  local cfg = config_ct()
  check(C.dq_bart_config_defaults(cfg, tostring(model_type)), 2)
  return to_table(cfg)
end

-- ---- table -> struct ------------------------------------------------------------------

local function fail(where, k, msg)
  error(("config.save: %skey %q %s"):format(where, k, msg), 0)
end

local function write_fields(t, s, fields, extra, where)
  local kind_of = {}
  for kind, list in pairs(fields) do
    for _, k in ipairs(list) do kind_of[k] = kind end
  end
  for k, v in pairs(t) do
    local kind = kind_of[k]
    if extra[k] then
      extra[k](v)
    elseif not kind then
      local known = {}
      for name in pairs(extra) do known[name] = true end
      for name in pairs(kind_of) do known[name] = true end
      fail(where, tostring(k), ("is unknown (did you mean %q?)"):format(suggest.nearest(k, known)))
    elseif kind == "int" then
      if type(v) ~= "number" or v % 1 ~= 0 then fail(where, k, "must be an integer, got " .. tostring(v)) end
      s[k] = v
    elseif kind == "float" then
      if type(v) ~= "number" then fail(where, k, "must be a number, got " .. tostring(v)) end
      s[k] = v
    elseif kind == "bool" then
      if type(v) ~= "boolean" then fail(where, k, "must be true or false, got " .. tostring(v)) end
      s[k] = v and 1 or 0
    elseif kind == "token" then
      if v == false then s[k] = -1
      elseif type(v) == "number" and v % 1 == 0 and v >= 0 then s[k] = v
      else fail(where, k, "must be a token id (a non-negative integer) or false, got " .. tostring(v)) end
    end
  end
end

function M.save(dir, t)
  if type(dir) ~= "string" then error("config.save: dir must be a string", 2) end
  if type(t) ~= "table" then error("config.save: expected a configuration table", 2) end
  if type(t.model_type) ~= "string" then error('config.save: the table needs model_type ("bart" or "mbart")', 2) end
  local cfg = config_ct()
  check(C.dq_bart_config_defaults(cfg, t.model_type), 2)
  write_fields(t, cfg, model_fields, {
    model_type = function() end, -- already applied through the defaults
    activation_function = function(v)
      if v == "gelu" then cfg.activation = C.DQ_ACT_GELU
      elseif v == "relu" then cfg.activation = C.DQ_ACT_RELU
      else fail("", "activation_function", ('is %q; dqbart implements "gelu" and "relu"'):format(tostring(v))) end
    end,
    generation = function(g)
      if type(g) ~= "table" then fail("", "generation", "must be a table") end
      write_fields(g, cfg.generation, generation_fields, {
        from_generation_config = function() end, -- where load found them; not written
        early_stopping = function(v)
          if v == true then cfg.generation.early_stopping = C.DQ_EARLY_STOPPING_TRUE
          elseif v == false then cfg.generation.early_stopping = C.DQ_EARLY_STOPPING_FALSE
          elseif v == "never" then cfg.generation.early_stopping = C.DQ_EARLY_STOPPING_NEVER
          else fail("generation ", "early_stopping", 'must be true, false or "never", got ' .. tostring(v)) end
        end,
      }, "generation ")
    end,
  }, "")
  if cfg.layer_norm_eps ~= 1e-5 then
    fail("", "layer_norm_eps", "must be 1e-5: transformers hardcodes it for BART and mBART and config.json cannot change it")
  end
  check(C.dq_bart_config_save(cfg, dir), 2)
end

return M
