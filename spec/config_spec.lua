-- dq.config: config.json / generation_config.json of BART and mBART read as
-- transformers 5 reads them (values from spec/fixtures/configs/expected.lua,
-- made by transformers), written byte-identical to save_pretrained, and a
-- clear error naming the file and key for every bad input.
local dq = require("dqbart")
local files = require("files")
local rejects = require("expect_error").rejects

local FIX = "spec/fixtures/configs/"
local expected = dofile(FIX .. "expected.lua")

local token_keys = { pad_token_id = true, bos_token_id = true, eos_token_id = true, decoder_start_token_id = true,
  forced_bos_token_id = true, forced_eos_token_id = true }

-- Compare dq's table with what transformers read (nil there is null: false here).
local function assert_matches(want, got, where)
  for k, v in pairs(want) do
    if type(v) == "table" then
      assert_matches(v, got[k], where .. k .. ".")
    else
      assert.are.equal(v, got[k], where .. k)
    end
  end
  for k in pairs(token_keys) do
    if want[k] == nil and got[k] ~= nil then
      assert.are.equal(false, got[k], where .. k .. " is null in transformers")
    end
  end
end

describe("config loading", function()
  for _, name in ipairs({ "bart_tiny", "mbart_tiny", "bart_legacy" }) do
    it("reads " .. name .. " as transformers does", function()
      local cfg = dq.config.load(FIX .. name)
      assert_matches(expected[name], cfg, "")
      local mbart = cfg.model_type == "mbart"
      assert.are.equal(mbart, cfg.normalize_before)
      assert.are.equal(mbart, cfg.add_final_layer_norm)
      assert.are.equal(1e-5, cfg.layer_norm_eps)
      assert.are.same(cfg, dq.config.load(FIX .. name .. "/config.json"))
    end)
  end

  it("takes generation defaults from generation_config.json alone when it exists", function()
    local dir = files.tempdir()
    local config = files.read(FIX .. "bart_legacy/config.json")
    files.write(dir .. "/config.json", config)
    local from_config = dq.config.load(dir).generation
    assert.are.equal(4, from_config.num_beams)
    assert.are.equal(142, from_config.max_length)
    assert.is_false(from_config.from_generation_config)
    -- As in transformers, config.json's generation keys stop counting: what
    -- generation_config.json leaves out takes the global defaults.
    files.write(dir .. "/generation_config.json", '{"max_length": 50, "decoder_start_token_id": 2}')
    local g = dq.config.load(dir).generation
    assert.are.same({ num_beams = 1, max_length = 50, min_length = 0, length_penalty = 1.0, no_repeat_ngram_size = 0,
      early_stopping = false, bos_token_id = false, eos_token_id = false, pad_token_id = false,
      decoder_start_token_id = 2, forced_bos_token_id = false, forced_eos_token_id = false,
      from_generation_config = true }, g)
    files.remove_tree(dir)
  end)

  it("gives transformers' defaults for absent keys", function()
    local dir = files.tempdir()
    files.write(dir .. "/config.json", '{"model_type": "mbart", "vocab_size": 100}')
    local cfg = dq.config.load(dir)
    local defaults = dq.config.defaults("mbart")
    defaults.vocab_size = 100
    assert.are.same(defaults, cfg)
    assert.are.equal(1024, cfg.d_model)
    assert.are.equal(false, cfg.decoder_start_token_id)
    assert.are.equal(2, dq.config.defaults("bart").decoder_start_token_id)
    files.remove_tree(dir)
  end)
end)

describe("config validation", function()
  local dir
  before_each(function() dir = files.tempdir() end)
  after_each(function() files.remove_tree(dir) end)

  local base = '"model_type": "bart", "vocab_size": 64, "d_model": 16, "encoder_attention_heads": 4, ' ..
      '"decoder_attention_heads": 4'

  -- config.json with `extra` members added to a valid base must fail,
  -- naming the file and every needle.
  local function refuses(extra, ...)
    files.write(dir .. "/config.json", "{" .. base .. (extra ~= "" and ", " .. extra or "") .. "}")
    return rejects(function() dq.config.load(dir) end, dir .. "/config.json", ...)
  end

  it("accepts the base these cases start from", function()
    files.write(dir .. "/config.json", "{" .. base .. "}")
    assert.are.equal(16, dq.config.load(dir).d_model)
  end)

  it("a missing config.json or directory", function()
    rejects(function() dq.config.load(dir) end, dir, "has no config.json")
    rejects(function() dq.config.load(dir .. "/nowhere") end, "nowhere", "does not exist")
  end)

  it("malformed JSON", function()
    files.write(dir .. "/config.json", '{"model_type": "bart",}')
    rejects(function() dq.config.load(dir) end, "config.json", "line 1, column 23", "expected a string key")
    files.write(dir .. "/config.json", '["bart"]')
    rejects(function() dq.config.load(dir) end, "config.json", "expected a JSON object")
  end)

  it("an unknown or missing model_type", function()
    files.write(dir .. "/config.json", '{"model_type": "t5"}')
    rejects(function() dq.config.load(dir) end, "config.json", 'model_type "t5" is not supported', '"bart"', '"mbart"')
    files.write(dir .. "/config.json", '{"d_model": 16}')
    rejects(function() dq.config.load(dir) end, "config.json", 'missing key "model_type"', '"bart"', '"mbart"')
    files.write(dir .. "/config.json", '{"model_type": 3}')
    rejects(function() dq.config.load(dir) end, 'key "model_type" is a number; expected a string')
  end)

  it("keys of the wrong type", function()
    refuses('"encoder_layers": "12"', 'key "encoder_layers" is a string; expected an integer')
    refuses('"max_position_embeddings": 10.5', 'key "max_position_embeddings" is a number; expected an integer')
    refuses('"encoder_ffn_dim": null', 'key "encoder_ffn_dim" is null; expected an integer')
    refuses('"scale_embedding": 1', 'key "scale_embedding" is a number; expected true or false')
    refuses('"dropout": "0.1"', 'key "dropout" is a string; expected a number')
    refuses('"activation_function": ["gelu"]', 'key "activation_function" is an array; expected a string')
    refuses('"pad_token_id": "1"', 'key "pad_token_id" is a string; expected a token id')
    refuses('"architectures": "BartModel"', 'key "architectures" is a string; expected an array of strings')
    refuses('"early_stopping": "sometimes"', 'key "early_stopping" is a string; expected true, false or "never"')
  end)

  it("values out of range", function()
    refuses('"decoder_layers": 0', 'key "decoder_layers" is 0; expected an integer from 1')
    refuses('"vocab_size": 3000000000', 'key "vocab_size" is 3000000000')
    refuses('"pad_token_id": -5', 'key "pad_token_id" is -5; expected a non-negative token id or null')
    refuses('"eos_token_id": 64', 'key "eos_token_id" is 64; expected null or a token id below vocab_size 64')
    refuses('"eos_token_id": [2, 3]', 'key "eos_token_id" lists 2 token ids')
    refuses('"dropout": 1.0', 'key "dropout" is 1; expected a probability in [0, 1)')
    refuses('"num_beams": 0', 'key "num_beams" is 0; expected an integer from 1')
  end)

  it("heads that do not divide d_model", function()
    refuses('"encoder_attention_heads": 5', 'key "d_model" (16) is not divisible by key "encoder_attention_heads" (5)')
    refuses('"decoder_attention_heads": 3', 'key "d_model" (16) is not divisible by key "decoder_attention_heads" (3)')
  end)

  it("activations the engine does not implement", function()
    refuses('"activation_function": "silu"', 'key "activation_function" is "silu"', '"gelu"', '"relu"')
    refuses('"activation_function": "gelu_new"', '"gelu_new"')
  end)

  it("legacy layout keys that contradict the model_type", function()
    refuses('"normalize_before": true', 'key "normalize_before" is true', 'model_type "bart" post-LN',
      'use model_type "mbart"')
    refuses('"add_final_layer_norm": true', 'key "add_final_layer_norm" is true')
    refuses('"normalize_embedding": false', 'key "normalize_embedding" is false')
    refuses('"static_position_embeddings": true', 'key "static_position_embeddings" is true')
    files.write(dir .. "/config.json", '{"model_type": "mbart", "add_final_layer_norm": false}')
    rejects(function() dq.config.load(dir) end, 'key "add_final_layer_norm" is false', 'model_type "mbart" with')
  end)

  it("a bad generation_config.json, named in the message", function()
    files.write(dir .. "/config.json", "{" .. base .. "}")
    files.write(dir .. "/generation_config.json", '{"num_beams": "4"}')
    rejects(function() dq.config.load(dir) end, dir .. "/generation_config.json", 'key "num_beams" is a string')
    files.write(dir .. "/generation_config.json", '{"forced_bos_token_id": 99}')
    rejects(function() dq.config.load(dir) end, dir .. "/generation_config.json", 'key "forced_bos_token_id" is 99')
    files.write(dir .. "/generation_config.json", '{"num_beams": 4')
    rejects(function() dq.config.load(dir) end, dir .. "/generation_config.json", "line 1")
  end)
end)

describe("config writing", function()
  local dir
  before_each(function() dir = files.tempdir() end)
  after_each(function() files.remove_tree(dir) end)

  for _, name in ipairs({ "bart_tiny", "mbart_tiny" }) do
    it("writes " .. name .. " byte-identical to transformers' save_pretrained", function()
      dq.config.save(dir, dq.config.load(FIX .. name))
      assert.are.same({ "config.json", "generation_config.json" }, files.list_dir(dir))
      assert.are.equal(files.read(FIX .. name .. "/config.json"), files.read(dir .. "/config.json"))
      assert.are.equal(files.read(FIX .. name .. "/generation_config.json"),
        files.read(dir .. "/generation_config.json"))
    end)
  end

  it("round trips a legacy config (generation keys move to generation_config.json)", function()
    local cfg = dq.config.load(FIX .. "bart_legacy")
    dq.config.save(dir .. "/new/nested", cfg)
    local again = dq.config.load(dir .. "/new/nested")
    assert.is_true(again.generation.from_generation_config)
    again.generation.from_generation_config = false
    assert.are.same(cfg, again)
  end)

  it("writes a partial table over the model_type's defaults", function()
    dq.config.save(dir, { model_type = "bart", d_model = 32, encoder_attention_heads = 4, decoder_attention_heads = 8,
      decoder_layers = 3, activation_function = "relu", forced_eos_token_id = false, dropout = 0.25,
      generation = { num_beams = 6, early_stopping = "never" } })
    local cfg = dq.config.load(dir)
    local want = dq.config.defaults("bart")
    want.d_model, want.encoder_attention_heads, want.decoder_attention_heads = 32, 4, 8
    want.decoder_layers, want.activation_function, want.forced_eos_token_id, want.dropout = 3, "relu", false, 0.25
    want.generation.num_beams, want.generation.early_stopping = 6, "never"
    want.generation.from_generation_config = true
    assert.are.same(want, cfg)
    assert.is_truthy(files.read(dir .. "/config.json"):find('"forced_eos_token_id": null,', 1, true))
    assert.is_truthy(files.read(dir .. "/config.json"):find('"dropout": 0.25,', 1, true))
  end)

  it("refuses bad tables without writing anything", function()
    rejects(function() dq.config.save(dir, { model_type = "bart", d_modle = 8 }) end, 'key "d_modle" is unknown',
      'did you mean "d_model"')
    rejects(function() dq.config.save(dir, { model_type = "bart", generation = { num_beam = 2 } }) end,
      'generation key "num_beam" is unknown', 'did you mean "num_beams"')
    rejects(function() dq.config.save(dir, { model_type = "gpt2" }) end, 'model_type "gpt2" is not supported')
    rejects(function() dq.config.save(dir, { d_model = 8 }) end, "needs model_type")
    rejects(function() dq.config.save(dir, { model_type = "bart", d_model = "8" }) end,
      'key "d_model" must be an integer')
    rejects(function() dq.config.save(dir, { model_type = "bart", pad_token_id = -1 }) end,
      'key "pad_token_id" must be a token id')
    rejects(function() dq.config.save(dir, { model_type = "bart", activation_function = "tanh" }) end, '"tanh"')
    rejects(function() dq.config.save(dir, { model_type = "bart", layer_norm_eps = 1e-6 }) end, "layer_norm_eps", "1e-5")
    rejects(function() dq.config.save(dir, { model_type = "bart", d_model = 100 }) end,
      'key "d_model" (100) is not divisible by key "encoder_attention_heads" (16)')
    rejects(function() dq.config.save(dir, { model_type = "bart", normalize_before = true }) end, "normalize_before")
    rejects(function() dq.config.save(dir, { model_type = "bart", eos_token_id = 70000 }) end,
      'key "eos_token_id" is 70000')
    assert.are.same({}, files.list_dir(dir))
  end)

  it("leaves no partial file when the target cannot be written", function()
    files.write(dir .. "/file", "not a directory")
    rejects(function() dq.config.save(dir .. "/file/ckpt", dq.config.defaults("bart")) end, "cannot create directory")
    os.execute("mkdir -p '" .. dir .. "/ckpt/config.json'")
    rejects(function() dq.config.save(dir .. "/ckpt", dq.config.defaults("bart")) end, "config.json", "is a directory")
    assert.are.same({ "config.json" }, files.list_dir(dir .. "/ckpt"))
    assert.are.same({ "ckpt", "file" }, files.list_dir(dir))
  end)
end)
