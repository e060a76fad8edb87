-- The DQ loop end to end on a tiny synthetic task (seconds on the CPU):
-- the loss falls, a stopped and resumed run repeats the uninterrupted one
-- bit for bit, the distillation terms bring the student closer to its
-- teacher than the task loss alone, a recipe's own step function and an
-- extra loss term work, and a non-finite loss stops the run naming the
-- update and the term.
--
-- The task: copy the first three words of a sentence over a 12-word
-- vocabulary in reverse order. A BPE vocabulary is trained on it and a
-- 2+2-layer BART (d_model 16) is trained briefly as the teacher.
local dq = require("dqbart")
local trainer = require("dqbart.trainer")
local teacher_mod = require("dqbart.teacher")
local dq_step = require("dqbart.dq")
local checkpoint = require("dqbart.checkpoint")
local ops = require("dqbart.ops")
local gradcheck = require("gradcheck")
local files = require("files")

local WORDS = { "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo",
  "lima" }

-- n examples as TSV (source, target), from a fixed linear congruential stream.
local function write_task(path, n, seed)
  local state = seed
  local function rand(k)
    state = (state * 1103515245 + 12345) % 2147483648
    return math.floor(state / 65536) % k + 1
  end
  local f = assert(io.open(path, "wb"))
  for _ = 1, n do
    local words = {}
    for i = 1, 5 + rand(4) do words[i] = WORDS[rand(#WORDS)] end
    f:write(table.concat(words, " "), "\t", ("%s %s %s"):format(words[3], words[2], words[1]), "\n")
  end
  f:close()
end

local ROOT = files.tempdir()
write_task(ROOT .. "/train.tsv", 256, 7)
write_task(ROOT .. "/valid.tsv", 32, 99)

-- The tokenizer and a freshly initialized 2+2 BART in ROOT/init.
local function fresh_teacher()
  local dir = ROOT .. "/init"
  if not checkpoint.exists(dir .. "/model.safetensors") then
    local texts = {}
    for line in io.lines(ROOT .. "/train.tsv") do
      local s, t = line:match("^(.-)\t(.*)$")
      texts[#texts + 1] = s
      texts[#texts + 1] = t
    end
    dq.tokenizer.train_bpe({ texts = texts, vocab_size = 300, min_frequency = 2, out = dir })
    local tok = dq.tokenizer.load(dir)
    dq.config.save(dir, {
      model_type = "bart", vocab_size = tok.vocab_size, d_model = 16, encoder_layers = 2, decoder_layers = 2,
      encoder_attention_heads = 2, decoder_attention_heads = 2, encoder_ffn_dim = 32, decoder_ffn_dim = 32,
      max_position_embeddings = 32, pad_token_id = tok.pad_id, bos_token_id = tok.bos_id,
      eos_token_id = tok.eos_id, decoder_start_token_id = tok.eos_id,
    })
    local m = dq.model.new(dir)
    teacher_mod.init_weights(m, 28, 0.02, tok.pad_id)
    m:save(dir)
    m:free()
  end
  return dq.model.load(dir), dir
end

local DATA = {}
local function datasets(dir)
  if not DATA[dir] then
    local tok = dq.tokenizer.load(dir)
    local function make(name)
      return dq.data.dataset({ path = ROOT .. "/" .. name, source = 1, target = 2, tokenizer = tok, cache = false,
        max_source_length = 16, max_target_length = 8 })
    end
    DATA[dir] = { train = make("train.tsv"), valid = make("valid.tsv") }
  end
  return DATA[dir]
end

local QUIET = { write = function() end, flush = function() end }

-- A job for trainer.train with small defaults; `extra` overrides.
local function job(model, dir, extra)
  local d = datasets(dir)
  local j = {
    model = model, train = d.train, device = "cpu", seed = 5,
    batch = { size = 16, accumulation = 2 }, optim = { lr = 3e-3, variant = "transformers", max_grad_norm = 1 },
    schedule = { kind = "constant", max_steps = 24 }, weights = { task = 1 },
    log = { every_steps = 4 }, output_dir = files.tempdir(), out = QUIET, tty = false, eval = { save = "none" },
  }
  for k, v in pairs(extra or {}) do j[k] = v end
  return j
end

-- The teacher: trained for 60 updates on the task (once for the file).
local TEACHER_DIR
local function teacher()
  if not TEACHER_DIR then
    local m, dir = fresh_teacher()
    local r = trainer.train(job(m, dir, { schedule = { kind = "linear", max_steps = 60 },
      optim = { lr = 1e-2 }, batch = { size = 16, accumulation = 1 } }))
    assert(r.status == "done", r.message)
    TEACHER_DIR = ROOT .. "/teacher"
    m:save(TEACHER_DIR)
    m:free()
  end
  local t = dq.model.load(TEACHER_DIR)
  t:eval()
  return t, TEACHER_DIR
end

-- A 2+1 student of the teacher (decoder layer 1), 2-2-8 when the model
-- can quantize.
local function student_of(t)
  local s = t:student({ encoder_layers = { 0, 1 }, decoder_layers = { 1 } })
  if s.set_quant then s:set_quant("2-2-8") end
  return s
end

local DISTILL = { task = 1, logits = 1, kl = 1, enc_att = 1, dec_att = 1, crs_att = 1, enc_hid = 1, dec_hid = 1,
  enc_hid_last = 1 }
local PAIRS = dq_step.layer_pairs({ 0, 1 }, { 1 }, 2)

local function mean(list, a, b)
  local s = 0
  for i = a, b do s = s + list[i] end
  return s / (b - a + 1)
end

describe("the DQ loop", function()
  it("pairs layers and hidden states as DQBART.md section 4 says", function()
    local p = dq_step.layer_pairs({ 0, 2, 5 }, { 5 }, 6)
    assert.are.same({ { 0, 0 }, { 1, 2 }, { 2, 5 } }, p.enc_att)
    assert.are.same({ { 0, 0 }, { 1, 1 }, { 2, 3 }, { 3, 6 } }, p.enc_hid)
    assert.are.same({ { 0, 0 }, { 1, 6 } }, p.dec_hid)
    assert.are.same({ { 0, 5 } }, p.crs_att)
    assert.are.same({ { 3, 6 } }, p.enc_hid_last)
  end)

  it("lowers the loss (the task loss of a model from scratch)", function()
    local m, dir = fresh_teacher()
    local r = trainer.train(job(m, dir, { schedule = { kind = "constant", max_steps = 30 },
      optim = { lr = 1e-2 }, batch = { size = 16, accumulation = 1 } }))
    assert.are.equal("done", r.status)
    local h = r.history
    assert.are.equal(30, #h)
    assert.is_true(mean(h, 26, 30) < 0.7 * mean(h, 1, 5),
      ("loss %.3f -> %.3f"):format(mean(h, 1, 5), mean(h, 26, 30)))
    m:free()
  end)

  it("resumes a stopped run exactly (every loss bit for bit)", function()
    local t, dir = teacher()
    local function run(opts)
      local s = student_of(t)
      local j = job(s, dir, { teacher = t, weights = DISTILL, pairs = PAIRS, log = { every_steps = 1 } })
      for k, v in pairs(opts) do j[k] = v end
      local r = trainer.train(j)
      s:free()
      return r, j.output_dir
    end
    local whole = run({})
    assert.are.equal("done", whole.status)
    local first, out = run({ stop_after = 9 })
    assert.are.equal("stopped", first.status)
    assert.matches("checkpoint saved in", first.message)
    local second = run({ output_dir = out, resume = true })
    assert.are.equal("done", second.status)
    assert.are.equal(9, #first.history)
    assert.are.equal(24 - 9, #second.history)
    for i = 1, 24 do
      local got = i <= 9 and first.history[i] or second.history[i - 9]
      assert.are.equal(("%.17g"):format(whole.history[i]), ("%.17g"):format(got), "update " .. i)
    end
    -- metrics.jsonl of the two halves holds the same per-update losses
    local logged = {}
    for line in io.lines(out .. "/metrics.jsonl") do
      local rec = checkpoint.json_decode(line)
      if rec.type == "train" then logged[#logged + 1] = rec.loss end
    end
    assert.are.equal(24, #logged)
    assert.are.equal(whole.history[24], logged[24])
    t:free()
  end)

  it("brings the student closer to the teacher with the distillation terms than with the task loss", function()
    local t, dir = teacher()
    local probe = datasets(dir).valid:loader({ batch_size = 32, shuffle = false }):next()
    local function gap(weights)
      local s = student_of(t)
      local r = trainer.train(job(s, dir, { teacher = t, weights = weights, pairs = PAIRS,
        schedule = { kind = "constant", max_steps = 30 } }))
      assert.are.equal("done", r.status)
      t:forward(probe)
      local tl = t:output("logits"):clone()
      s:eval()
      s:forward(probe)
      local v = dq.loss.mse(s:output("logits"), tl):item()
      s:free()
      return v
    end
    local task_only = gap({ task = 1 })
    local distilled = gap(DISTILL)
    assert.is_true(distilled < 0.8 * task_only,
      ("logits MSE to the teacher: %.4g distilled, %.4g task only"):format(distilled, task_only))
    t:free()
  end)

  it("makes the gradient of the total loss it reports (finite differences, every term, CPU f32)", function()
    -- The step's terms share injection buffers and layer maps; a gradient
    -- that went to the wrong output or layer would leave every value right
    -- and the training wrong. Unquantized, without dropout, the total is
    -- smooth in the student's weights.
    local t, dir = teacher()
    local s = t:student({ encoder_layers = { 0, 1 }, decoder_layers = { 1 } })
    s:set_dropout({ dropout = 0, attention_dropout = 0, activation_dropout = 0 }):train()
    -- moved off the teacher's copied layers, so that every term is nonzero
    for k, name in ipairs(s:param_names()) do
      local w = s:param(name)
      ops.axpby(w, dq.randn(w:size(), { seed = 100 + k }), 0.05, 1)
    end
    s:params_changed()
    local batch = datasets(dir).train:loader({ batch_size = 4, shuffle = false }):next()
    local values = {}
    for _, name in ipairs(dq_step.TERMS) do values[name] = dq.zeros({}) end
    local ctx = {
      student = s, teacher = t, weights = DISTILL, scale = 1, pairs = PAIRS, batches = { batch }, values = values,
      teacher_outputs = { output_hidden_states = true, output_attentions = true }, rng = dq.rng(3),
      label_smoothing = 0.1, temperature = 2, extra_losses = {}, host_values = {},
      optimizer = { step = function() end }, -- a test double: the gradients are read, nothing is updated
    }
    local function total()
      for _, name in ipairs(dq_step.TERMS) do values[name]:fill_(0) end
      dq_step.step(ctx)
      local sum = 0
      for _, name in ipairs(dq_step.TERMS) do
        local v = values[name]:item()
        assert.is_true(v > 0, name .. " contributes")
        sum = sum + v
      end
      return sum
    end
    total()
    local failures = gradcheck.model_params(s, { "model.shared.weight",
      "model.encoder.layernorm_embedding.weight", "model.encoder.layers.0.self_attn.k_proj.weight",
      "model.encoder.layers.1.fc2.weight", "model.decoder.layers.0.encoder_attn.q_proj.weight",
      "model.decoder.layers.0.fc1.bias" }, total)
    assert.are.same({}, failures)
    s:free()
    t:free()
  end)

  it("runs a recipe's own step function", function()
    local t, dir = teacher()
    local calls, seen = 0, nil
    local function my_step(ctx)
      calls = calls + 1
      seen = #ctx.batches
      dq_step.step(ctx) -- the standard step, then something of our own
      ctx.values.task:fill_(1.5)
    end
    local s = student_of(t)
    local j = job(s, dir, { teacher = t, weights = DISTILL, pairs = PAIRS, step = my_step,
      schedule = { kind = "constant", max_steps = 6 } })
    local r = trainer.train(j)
    assert.are.equal("done", r.status)
    assert.are.equal(6, calls)
    assert.are.equal(2, seen)
    -- the logged task value is what the step left there, over 2 micro-batches
    for line in io.lines(j.output_dir .. "/metrics.jsonl") do
      local rec = checkpoint.json_decode(line)
      if rec.type == "train" then assert.are.equal(0.75, rec.task) end
    end
    s:free()
    t:free()
  end)

  it("adds an extra loss term: logged, and its gradient reaches the model", function()
    local t, dir = teacher()
    local function final_logit_norm(extra)
      local s = student_of(t)
      local j = job(s, dir, { teacher = t, weights = { task = 1 }, pairs = PAIRS, extra_losses = extra,
        schedule = { kind = "constant", max_steps = 12 } })
      local r = trainer.train(j)
      assert.are.equal("done", r.status)
      local names = {}
      for line in io.lines(j.output_dir .. "/metrics.jsonl") do
        local rec = checkpoint.json_decode(line)
        if rec.type == "train" then for k in pairs(rec) do names[k] = true end end
      end
      local probe = datasets(dir).valid:loader({ batch_size = 32, shuffle = false }):next()
      s:eval()
      s:forward(probe)
      local logits = s:output("logits")
      local norm = dq.loss.mse(logits, dq.zeros(logits:size())):item()
      s:free()
      return norm, names
    end
    -- shrink the logits towards 0 with a heavy weight
    local shrink = {
      shrink = function(ctx)
        local s = ctx.student
        local logits = s:output("logits")
        ctx.zeros = ctx.zeros or {}
        local key = table.concat(logits:size(), "x")
        ctx.zeros[key] = ctx.zeros[key] or dq.zeros(logits:size())
        return dq.loss.mse(logits, ctx.zeros[key], { grad = s:output_grad("logits"), accumulate = true,
          weight = 20 * ctx.scale, value = ctx.values.shrink, add_value = true })
      end,
    }
    local plain = final_logit_norm(nil)
    local shrunk, names = final_logit_norm(shrink)
    assert.is_true(names.shrink, "metrics.jsonl has a 'shrink' column")
    assert.is_true(shrunk < 0.5 * plain, ("mean square logit %.4g with the term, %.4g without"):format(shrunk, plain))
    t:free()
  end)

  it("stops on a non-finite loss, naming the update and the term", function()
    local t, dir = teacher()
    local s = student_of(t)
    local nan = dq.full({}, 0 / 0)
    local r = trainer.train(job(s, dir, { teacher = t, weights = { task = 1 }, log = { every_steps = 5 },
      extra_losses = { boom = function(ctx) if ctx.update == 6 then return nan end end } }))
    assert.are.equal("nonfinite", r.status)
    assert.matches("update 7: the loss term 'boom' is nan", r.message, 1, true)
    assert.is_true(r.update >= 7 and r.update <= 10) -- found when that interval was logged
    s:free()
    t:free()
  end)
end)
