-- dq.size: the size of a (quantized, distilled) BART/mBART model counted
-- as DQ-BART counts it (DQBART.md section 6), from its configuration only.
--
--   dq.size.report(config, { bits = "2-2-8", encoder_layers = 6, decoder_layers = 3 })
--     -> { mib = 32.69, bytes = ..., ratio = 16.28, teacher_mib = 532.04, ... }
--
-- At their bit width: every linear weight of the encoder and decoder layers
-- (W) and the shared token embedding (E, counted once: it is tied to the LM
-- head). At 32 bits: biases, LayerNorms (embedding, per layer and mBART's
-- final ones), both learned positional tables (max_position_embeddings + 2
-- rows each, transformers' offset) and final_logits_bias. An untied LM head
-- would count at 32 bits. The ratio compares with the same configuration
-- at 32-32-32 with all of the config's layers (the teacher). MiB = 2^20 bytes.
local quant = require("dqbart.quant_plan")

local M = {}

local POSITION_OFFSET = 2

local function need(config, key)
  local v = config[key]
  if type(v) ~= "number" or v < 0 or v % 1 ~= 0 then
    error(("size.report: config.%s is %s; expected a non-negative integer"):format(key, tostring(v)), 3)
  end
  return v
end

-- Parameter counts of one model shape, split by how they are stored.
local function counts(config, enc_layers, dec_layers)
  local d, V = need(config, "d_model"), need(config, "vocab_size")
  local fe, fd = need(config, "encoder_ffn_dim"), need(config, "decoder_ffn_dim")
  local P = need(config, "max_position_embeddings")
  -- Encoder layer: q, k, v, out projections and fc1, fc2 (weights and
  -- biases), self-attention and final LayerNorms. Decoder layer: the same
  -- plus cross-attention (four projections and a LayerNorm).
  local enc_linear, dec_linear = 4 * d * d + 2 * d * fe, 8 * d * d + 2 * d * fd
  local enc_fp = (4 * d + fe + d) + 2 * (2 * d)
  local dec_fp = (8 * d + fd + d) + 3 * (2 * d)
  local fp = enc_layers * enc_fp + dec_layers * dec_fp
  fp = fp + 2 * (P + POSITION_OFFSET) * d -- encoder and decoder positions
  fp = fp + 2 * (2 * d)                    -- layernorm_embedding of both stacks
  if config.add_final_layer_norm then fp = fp + 2 * (2 * d) end
  fp = fp + V                              -- final_logits_bias
  if config.tie_word_embeddings == false then fp = fp + V * d end
  return {
    linear = enc_layers * enc_linear + dec_layers * dec_linear,
    embedding = V * d,
    full_precision = fp,
  }
end

local function bytes_of(c, bits)
  return (c.linear * bits.weight + c.embedding * bits.embedding) / 8 + c.full_precision * 4
end

local MIB = 1024 * 1024

function M.report(config, opts)
  opts = opts or {}
  if type(config) ~= "table" then error("size.report: expected a configuration table (dq.config.load)", 2) end
  local bits = quant.parse(opts.bits or "32-32-32", 2)
  local teacher_enc, teacher_dec = need(config, "encoder_layers"), need(config, "decoder_layers")
  local enc, dec = opts.encoder_layers or teacher_enc, opts.decoder_layers or teacher_dec
  local function check_layers(name, n, max)
    if type(n) ~= "number" or n % 1 ~= 0 or n < 1 or n > max then
      error(("size.report: %s = %s; expected 1..%d (the model's)"):format(name, tostring(n), max), 3)
    end
  end
  check_layers("encoder_layers", enc, teacher_enc)
  check_layers("decoder_layers", dec, teacher_dec)
  local c = counts(config, enc, dec)
  local bytes = bytes_of(c, bits)
  local teacher_bytes = bytes_of(counts(config, teacher_enc, teacher_dec),
    { weight = 32, embedding = 32, activation = 32 })
  return {
    bits = bits,
    encoder_layers = enc,
    decoder_layers = dec,
    bytes = bytes,
    mib = bytes / MIB,
    teacher_bytes = teacher_bytes,
    teacher_mib = teacher_bytes / MIB,
    ratio = teacher_bytes / bytes,
    quantized_linear_params = c.linear,
    embedding_params = c.embedding,
    full_precision_params = c.full_precision,
  }
end

return M
