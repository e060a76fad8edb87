-- dqbart.teacher: a small BART teacher trained from scratch (the recipe's
-- teacher.train): a byte-level BPE vocabulary trained on the training
-- data, a model initialized as transformers initializes BART, trained on
-- the token cross-entropy, saved in Hugging Face layout with its
-- tokenizer.
--
--   local dir, result = teacher.ensure(r, { device =, dtype =, resume = })
--     -> the teacher's directory (reused when it already holds a finished
--        teacher of the same spec), or nil and the training result when
--        training stopped early (Ctrl-C, a non-finite loss)
--   teacher.init_weights(model, seed)
--
-- Training works in <dir>.training (tokenizer, initial model, checkpoint,
-- metrics.jsonl, train.log, best/); the finished teacher is published to
-- <dir> with dqbart_teacher.json, which records the spec it was trained
-- for: a later run with the same spec reuses it.
local dq = require("dqbart")
local checkpoint = require("dqbart.checkpoint")
local trainer = require("dqbart.trainer")
local trainer_eval = require("dqbart.trainer_eval")
local engine = require("dqbart.data_engine")

local M = {}

M.SPEC_FILE = "dqbart_teacher.json"

-- transformers' BartPretrainedModel._init_weights: linear and embedding
-- weights ~ N(0, init_std^2), biases 0, LayerNorms 1 and 0, the padding
-- row of the token embedding 0 (final_logits_bias stays 0). Draws come
-- from the stream of `seed`, one span per tensor in buffer order.
function M.init_weights(model, seed, init_std, pad_id)
  local gen = dq.rng(seed)
  local std = init_std or 0.02
  for i, name in ipairs(model:param_names()) do
    local p = model:param(i)
    if name:find("norm", 1, true) then
      p:fill_(name:match("%.weight$") and 1 or 0)
    elseif name:match("bias$") then
      p:fill_(0)
    else
      local r = gen:randn(p:size(), { device = p:device_name() })
      dq.scale(r, std, p)
      r:free()
      if name == "model.shared.weight" and pad_id then p:select(1, pad_id + 1):fill_(0) end
    end
    p:free()
  end
  model:params_changed()
end

-- Everything the trained teacher depends on (not where it is written).
function M.spec(r)
  local tr, d = r.teacher.train, r.data
  local spec = { data_hash = engine.hash_file(d.train), seed = r.seed }
  for k, v in pairs(tr) do if k ~= "dir" then spec[k] = v end end
  for _, k in ipairs({ "source", "target", "format", "header", "limit_train", "limit_valid", "max_source_length",
    "max_target_length" }) do
    spec["data_" .. k] = d[k]
  end
  spec.valid_hash = checkpoint.exists(d.valid) and engine.hash_file(d.valid) or nil
  return spec
end

local function texts_of(r)
  local d = r.data
  local read = require("dqbart.data.read")
  local rd = read.open(d.train, { format = d.format, source = d.source, target = d.target, header = d.header,
    limit = d.limit_train })
  local texts = {}
  while true do
    local chunk = rd:next_chunk(4096)
    if not chunk then break end
    for i, s in ipairs(chunk.sources) do
      texts[#texts + 1] = s
      texts[#texts + 1] = chunk.targets[i]
    end
  end
  rd:close()
  return texts
end

-- config.json of the teacher to train (ids from the trained vocabulary),
-- and generation_config.json with the special tokens and the recipe's
-- generation settings, as fine-tuned hub checkpoints ship them.
local function config_of(r, tok)
  local tr, e = r.teacher.train, r.eval
  return {
    model_type = "bart", vocab_size = tok.vocab_size, d_model = tr.d_model,
    encoder_layers = tr.encoder_layers, decoder_layers = tr.decoder_layers,
    encoder_attention_heads = tr.heads, decoder_attention_heads = tr.heads,
    encoder_ffn_dim = tr.ffn_dim, decoder_ffn_dim = tr.ffn_dim, max_position_embeddings = tr.max_positions,
    dropout = tr.dropout, attention_dropout = tr.attention_dropout, activation_dropout = tr.activation_dropout,
    init_std = tr.init_std,
    pad_token_id = tok.pad_id, bos_token_id = tok.bos_id, eos_token_id = tok.eos_id,
    decoder_start_token_id = tok.eos_id, forced_eos_token_id = tok.eos_id,
    generation = {
      bos_token_id = tok.bos_id, eos_token_id = tok.eos_id, pad_token_id = tok.pad_id,
      decoder_start_token_id = tok.eos_id, forced_eos_token_id = tok.eos_id, forced_bos_token_id = tok.bos_id,
      num_beams = e.beams, length_penalty = e.length_penalty, max_length = e.max_length, min_length = e.min_length,
      no_repeat_ngram_size = e.no_repeat_ngram_size, early_stopping = e.early_stopping,
    },
  }
end

-- Messages go to the run's output (io.stdout unless a caller gives another).
local out = io.stdout
local function say(fmt, ...) out:write(fmt:format(...), "\n"); out:flush() end

-- The recipe's teacher directory: reused when it holds a teacher trained
-- for the same spec, trained otherwise. Returns dir, or nil and the
-- trainer's result when training stopped early.
function M.ensure(r, env)
  out = env.out or io.stdout
  local dir = r.teacher.train.dir
  -- two runs sharing a teacher directory must not train it at once
  return checkpoint.with_lock(dir, "teacher", M.reuse_or_train, r, env, dir)
end

function M.reuse_or_train(r, env, dir)
  local spec = M.spec(r)
  local key = checkpoint.json_encode(spec)
  local done = checkpoint.read_file(dir .. "/" .. M.SPEC_FILE)
  if done then
    local ok, saved = pcall(checkpoint.json_decode, done)
    if ok and checkpoint.json_encode(saved.spec) == key then
      say("teacher: %s holds a teacher trained for this recipe; reusing it", dir)
      return dir
    end
    say("teacher: %s was trained for another spec; training a new one", dir)
  end
  return M.train(r, env, dir, spec)
end

-- Train the teacher of the recipe in dir .. ".training" (resumable) and
-- publish it at dir; returns dir, or nil and the trainer's result when
-- training stopped early (Ctrl-C, a non-finite loss).
function M.train(r, env, dir, spec)
  local tr = r.teacher.train
  local work = dir .. ".training"
  local init = work .. "/init"
  local init_key = checkpoint.json_encode({ spec = spec, init = true })
  if checkpoint.read_file(init .. "/" .. M.SPEC_FILE) ~= init_key then
    -- the vocabulary and the configuration; the weights are drawn below
    checkpoint.remove_tree(work)
    checkpoint.publish(init, function(tmp)
      checkpoint.mkdir_p(tmp)
      local t0 = require("dqbart.progress").now()
      dq.tokenizer.train_bpe({ texts = texts_of(r), vocab_size = tr.vocab_size, min_frequency = tr.min_frequency,
        out = tmp })
      local tok = dq.tokenizer.load(tmp)
      say("teacher: BPE vocabulary of %d tokens from %s (%.1f s)", tok.vocab_size, r.data.train,
        require("dqbart.progress").now() - t0)
      dq.config.save(tmp, config_of(r, tok))
      -- the initial weights, saved so that the model loads from here and
      -- carries the tokenizer files into every directory it is saved to
      local fresh = dq.model.new(tmp)
      M.init_weights(fresh, r.seed, dq.config.load(tmp).init_std, tok.pad_id)
      fresh:save(tmp)
      fresh:free()
      checkpoint.write_file(tmp .. "/" .. M.SPEC_FILE, init_key)
    end)
  end
  local model = dq.model.load(init, { device = env.device, dtype = env.dtype })
  local info = model:info()
  say("teacher: training BART d_model %d, %d+%d layers, %d heads, ffn %d, vocabulary %d (%.2fM parameters) in %s",
    info.d_model, info.encoder_layers, info.decoder_layers, info.encoder_heads, info.encoder_ffn_dim,
    info.vocab_size, info.numel / 1e6, work)

  local datasets = env.datasets(init)
  local result = trainer.train({
    model = model, train = datasets.train, valid = datasets.valid, device = env.device, seed = r.seed,
    batch = { size = tr.batch_size, accumulation = 1, shuffle = r.batch.shuffle, bucket = r.batch.bucket,
      pad_multiple = r.batch.pad_multiple },
    optim = { variant = "torch", lr = tr.lr, betas = r.optim.betas, eps = 1e-8, weight_decay = tr.weight_decay,
      no_decay = r.optim.no_decay, max_grad_norm = tr.max_grad_norm, skip_nonfinite = r.optim.skip_nonfinite },
    schedule = { kind = "linear", epochs = tr.epochs, max_steps = tr.max_steps, warmup_ratio = tr.warmup_ratio,
      warmup_rounding = r.schedule.warmup_rounding },
    weights = { task = 1 }, label_smoothing = tr.label_smoothing,
    evaluate = datasets.valid and function(m)
      return { metric = "loss", loss = trainer_eval.loss(m, datasets.valid, { device = env.device,
        batch_size = r.batch.eval_size * 4 }) }
    end or nil,
    eval = { each_epoch = true, save = "best" },
    log = { every_steps = r.log.every_steps, file = work .. "/train.log" },
    output_dir = work, resume = env.resume and true or false, label = "teacher",
    checkpoint_every_steps = r.checkpoint_every_steps, out = env.out, tty = env.tty,
    stop_after = env.stop_after,
  })
  if result.status ~= "done" then
    model:free()
    return nil, result
  end
  -- publish the best epoch's weights with the tokenizer and the spec
  if result.best_dir then model:load_weights(result.best_dir .. "/model.safetensors") end
  checkpoint.publish(dir, function(tmp)
    model:save(tmp)
    checkpoint.write_file(tmp .. "/" .. M.SPEC_FILE, checkpoint.json_encode({
      spec = spec, best = result.best and { metric = result.best.metric, value = result.best.value,
        update = result.best.update } or nil, updates = result.update }) .. "\n")
  end)
  model:free()
  say("teacher: saved in %s (best validation loss %s at update %s)", dir,
    result.best and require("dqbart.progress").number(result.best.value) or "-",
    result.best and tostring(result.best.update) or "-")
  return dir
end

return M
