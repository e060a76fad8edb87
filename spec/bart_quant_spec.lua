-- A BART model as a DQ-BART student under a quantization plan
-- (engine/dqbart_model_quant.h, model:set_quant): parity with a PyTorch
-- reimplementation of the reference's quantized BART, detection of plausible
-- mistakes, when weights are quantized, full precision when off, per-module
-- plans, `dqbart forward --quant`.
--
-- Fixtures (spec/fixtures/make_quant_fixtures.py, torch + transformers 5,
-- training mode with dropout 0): a tiny random BART (odd head dims, 3 + 2
-- layers, vocab 101) whose weights include outliers beyond the clip, a
-- padded batch with -100 labels, and for 2-2-8, 8-8-8 and 2-8-8 (W != E,
-- which the reference cannot express) the logits, the loss and every
-- latent-weight gradient; for four mistakes at 2-2-8, their logits.
--
-- Tolerances (CPU f32):
--  - 2-2-8 and 2-8-8: every tensor within 1e-4 max abs (measured: ~3e-6 on
--    logits of magnitude ~20, ~2e-6 on gradients);
--  - 8-8-8: relative norm |got - want| / |want| of the logits within 3e-2,
--    of the loss 3e-2, of all gradients together 0.25. At 8 bits float noise
--    flips roundings of activations, which moves logits by about 2% and
--    gradients by about 13% (DQBART.md section 8); on this fixture the CPU
--    happens to agree to ~1e-6, but the spec holds only what is guaranteed.
--  - mistakes: each differs from the right 2-2-8 result by >= 0.15 in the
--    relative norm of the logits, so the 2-2-8 check above detects it.
-- On CUDA (skipped without a GPU): f32 and bf16 by the relative norm of the
-- logits (1e-2 and 0.1) and of all gradients (5e-2 and 0.3): the bf16
-- working copy and CUDA's summation order flip 8-bit roundings.
local dq = require("dqbart")
local tensor_diff = require("tensor_diff")
local launcher = require("launcher")
local cuda_skip = require("cuda_skip")

local FIXTURES = "spec/fixtures/quant/"
local MODEL = FIXTURES .. "bart"

-- ---- helpers --------------------------------------------------------------------------------

local diff_parts, diff = tensor_diff.diff_parts, tensor_diff.diff -- max abs (, sums of squares | relative norm)

local function identical(a, b)
  local worst = diff(a, b)
  return worst == 0
end

local inputs = dq.safetensors.open(FIXTURES .. "bart_inputs.safetensors"):tensors()

local function expected(name)
  return dq.safetensors.open(FIXTURES .. "bart_" .. name .. "_expected.safetensors"):tensors()
end

local function batch(device)
  local function to(t) return t:to(device or "cpu") end
  return { input_ids = to(inputs.input_ids), attention_mask = to(inputs.attention_mask),
    decoder_input_ids = to(inputs.decoder_input_ids), decoder_attention_mask = to(inputs.decoder_attention_mask) }
end

local function load(device, dtype)
  return dq.model.load(MODEL, { device = device or "cpu", dtype = dtype or "f32" })
      :set_dropout({ dropout = 0, attention_dropout = 0, activation_dropout = 0 })
end

-- Training forward (dropout off), loss, backward: logits, loss and every
-- latent gradient, as the fixtures name them (copies on the CPU).
local function run_all(m, device)
  device = device or "cpu"
  m:train()
  m:forward(batch(device))
  local got = { logits = m:output("logits"):to("f32", "cpu") }
  got.loss = dq.model.cross_entropy(m:output("logits"), inputs.labels:to(device),
    { grad = m:output_grad("logits") }):to("cpu")
  m:zero_grad()
  m:backward()
  for i, name in ipairs(m:param_names()) do
    if m:trainable(i) then got["grad." .. name] = m:grad(i):to("f32", "cpu") end
  end
  return got
end

local function max_abs_failures(got, want, tol)
  local failures, count = tensor_diff.mismatches(got, want, function(_, g, w)
    local worst = diff(g, w)
    if not (worst <= tol) then return ("max abs difference %.3g > %g"):format(worst, tol) end
  end)
  assert(count > 50, "the fixture holds too few tensors")
  table.sort(failures)
  return failures
end

local assert_none = tensor_diff.assert_none -- fails listing the mismatches

-- Relative norm over every gradient together.
local function grads_rel(got, want)
  local num, den = 0, 0
  for name, w in pairs(want) do
    if name:match("^grad%.") then
      local _, n, d = diff_parts(got[name], w)
      num, den = num + n, den + d
    end
  end
  return math.sqrt(num / den)
end

-- ---- parity ----------------------------------------------------------------------------------

describe("a quantized student on the CPU (f32) against the PyTorch reimplementation", function()
  for _, wea in ipairs({ "2-2-8", "2-8-8" }) do
    it(wea .. ": logits, loss and every latent-weight gradient within 1e-4 (max abs)", function()
      local m = load():set_quant(wea)
      assert_none(max_abs_failures(run_all(m), expected(wea), 1e-4))
      m:free()
    end)
  end

  it("8-8-8: logits and loss within 3e-2, gradients within 0.25 (relative norm)", function()
    local m = load():set_quant("8-8-8")
    local got, want = run_all(m), expected("8-8-8")
    local _, rel = diff(got.logits, want.logits)
    assert.is_true(rel <= 3e-2, ("logits relative difference %.3g"):format(rel))
    local _, lrel = diff(got.loss, want.loss)
    assert.is_true(lrel <= 3e-2, ("loss relative difference %.3g"):format(lrel))
    local grel = grads_rel(got, want)
    assert.is_true(grel <= 0.25, ("gradients relative difference %.3g"):format(grel))
    m:free()
  end)

  it("eval mode gives the training forward's logits (dropout off), from the same quantized weights", function()
    local m = load():set_quant("2-2-8")
    m:eval():forward(batch())
    local worst = diff(m:output("logits"), expected("2-2-8").logits)
    assert.is_true(worst <= 1e-4, ("max abs difference %.3g"):format(worst))
    m:free()
  end)
end)

describe("plausible mistakes are detected", function()
  local right = expected("2-2-8").logits
  -- what the engine does when set up with the mistake (nil: no such option)
  local mistakes = {
    noclip = { clip = math.huge },
    fp_attention = { attention = "none" },
    tensor_embedding = { embedding = { granularity = "tensor" } },
    quant_lm_head = false,
  }
  local m = load()
  local mine
  it("the right 2-2-8 result and each mistake differ by at least 0.15 (relative norm of the logits)", function()
    m:set_quant("2-2-8"):eval():forward(batch())
    mine = m:output("logits"):to("f32", "cpu")
    for name in pairs(mistakes) do
      local wrong = expected("2-2-8_" .. name).logits
      local _, rel = diff(wrong, right)
      assert.is_true(rel >= 0.15, ("%s: the fixture's mistake is only %.3g off"):format(name, rel))
      local _, rel_mine = diff(wrong, mine)
      assert.is_true(rel_mine >= 0.15, ("%s: the engine is only %.3g from the mistake"):format(name, rel_mine))
    end
  end)

  for name, spec in pairs(mistakes) do
    if spec then
      it(("the engine set up with the mistake (%s) reproduces it within 1e-4"):format(name), function()
        local plan = { bits = "2-2-8" }
        for k, v in pairs(spec) do plan[k] = v end
        m:set_quant(plan):eval():forward(batch())
        local worst = diff(m:output("logits"), expected("2-2-8_" .. name).logits)
        assert.is_true(worst <= 1e-4, ("max abs difference %.3g"):format(worst))
      end)
    end
  end
end)

-- ---- off, schedule, working weights ----------------------------------------------------------------

describe("quantization off", function()
  it("32-32-32, nil, and a plan selecting nothing leave the model exactly as it is without a plan", function()
    local plain = run_all(load())
    for _, spec in ipairs({ "32-32-32", false, { bits = "2-2-8", linears = "none", attention = "none",
      embedding = false } }) do
      local m = load():set_quant(spec)
      assert.is_false(m:quant().active)
      local got = run_all(m)
      for name, t in pairs(plain) do
        assert.is_true(identical(got[name], t), ("%s differs with plan %s"):format(name, tostring(spec)))
      end
      m:free()
    end
  end)

  it("removing a plan gives the full-precision model back, in training and in eval mode", function()
    local plain = load()
    plain:eval():forward(batch())
    local want = plain:output("logits"):to("f32", "cpu")
    local want_train = run_all(plain)
    local m = load():set_quant("2-2-8")
    run_all(m)
    m:eval():forward(batch())
    assert.is_false(identical(m:output("logits"), want))
    m:set_quant(nil)
    m:forward(batch())
    assert.is_true(identical(m:output("logits"), want))
    local got = run_all(m)
    for name, t in pairs(want_train) do assert.is_true(identical(got[name], t), name) end
    m:free()
    plain:free()
  end)
end)

describe("when the weights are quantized", function()
  local function step(m, n)
    for _ = 1, n or 1 do
      m:forward(batch())
      dq.model.cross_entropy(m:output("logits"), inputs.labels, { grad = m:output_grad("logits") })
      m:backward()
    end
  end

  it("once per step: at the first forward after a change, or when quantize_weights says so", function()
    local m = load():set_quant("2-2-8"):train()
    local function updates() return m:quant().weight_updates end
    assert.are.equal(0, updates())
    m:forward(batch())
    assert.are.equal(1, updates())
    m:forward(batch()) -- nothing changed: no recomputation
    assert.are.equal(1, updates())
    m:backward() -- an optimizer step may follow: the next forward recomputes
    m:forward(batch())
    assert.are.equal(2, updates())
    -- the caller takes over: one quantization per step, however many micro-batches
    m:zero_grad()
    m:quantize_weights()
    assert.are.equal(3, updates())
    assert.is_true(m:quant().caller_schedules)
    step(m, 3)
    assert.are.equal(3, updates())
    m:quantize_weights()
    step(m, 2)
    assert.are.equal(4, updates())
    -- signalled changes still count
    m:params_changed()
    step(m)
    assert.are.equal(5, updates())
    m:eval():forward(batch())
    m:forward(batch())
    assert.are.equal(6, updates()) -- the mode switch, once
    m:free()
  end)

  it("micro-batches accumulate: two backwards give twice one backward's gradients", function()
    local m = load():set_quant("2-2-8"):train()
    m:quantize_weights()
    m:zero_grad()
    step(m)
    local once = {}
    for i, name in ipairs(m:param_names()) do
      if m:trainable(i) then once[name] = m:grad(i):to("f32", "cpu") end
    end
    m:zero_grad()
    step(m, 2)
    for i, name in ipairs(m:param_names()) do
      if m:trainable(i) then
        local g = m:grad(i):to("f32", "cpu")
        local twice = dq.scale(once[name], 2)
        local worst = diff(g, twice)
        assert.is_true(worst <= 1e-5, ("%s: %.3g"):format(name, worst))
      end
    end
    m:free()
  end)

  it("from the latent weights: the working copy is their quantization, the parameters stay latent", function()
    local m = load():set_quant("2-8-8", { clip = 2.5 })
    m:eval():forward(batch())
    local q = m:working_param("model.encoder.layers.1.self_attn.k_proj.weight")
    local latent = m:param("model.encoder.layers.1.self_attn.k_proj.weight")
    assert.is_true(identical(q, dq.quant.quantize(latent, { bits = 2, granularity = "tensor", clip = 2.5 })))
    local values = {}
    for _, row in ipairs(q:totable()) do for _, v in ipairs(row) do values[v] = true end end
    local n = 0
    for _ in pairs(values) do n = n + 1 end
    assert.are.equal(3, n) -- ternary: -a, 0, a
    -- q and v of the fused block have statistics of their own
    local v = m:working_param("model.decoder.layers.0.self_attn.v_proj.weight")
    assert.is_true(identical(v, dq.quant.quantize(m:param("model.decoder.layers.0.self_attn.v_proj.weight"),
      { bits = 2, granularity = "tensor" })))
    local emb = m:working_param("model.shared.weight")
    assert.is_true(identical(emb, dq.quant.quantize(m:param("model.shared.weight"),
      { method = "sym", bits = 8, granularity = "row" })))
    for _, name in ipairs({ "model.encoder.layers.1.self_attn.k_proj.bias", "model.decoder.embed_positions.weight",
      "model.decoder.layers.1.final_layer_norm.weight", "final_logits_bias" }) do
      assert.is_true(identical(m:working_param(name), m:param(name)), name .. " must stay full precision")
    end
    -- a write to the latent weights is seen by the next forward
    dq.scale(latent, 0.5, latent)
    local before = m:quant().weight_updates
    m:forward(batch())
    assert.are.equal(before + 1, m:quant().weight_updates)
    assert.is_true(identical(m:working_param("model.encoder.layers.1.self_attn.k_proj.weight"),
      dq.quant.quantize(latent, { bits = 2, granularity = "tensor" })))
    m:free()
  end)

  it("a step allocates nothing once the largest batch has been through", function()
    local m = load():set_quant("2-2-8"):train()
    step(m)
    collectgarbage()
    collectgarbage()
    local _, _, held = dq.memory_info("cpu")
    m:quantize_weights()
    step(m, 2)
    collectgarbage()
    collectgarbage()
    local _, _, after = dq.memory_info("cpu")
    assert.are.equal(held, after)
    m:free()
  end)
end)

-- ---- plans ------------------------------------------------------------------------------------------

describe("plans", function()
  local m = load()
  local config = dq.config.load(MODEL)

  it("count what they quantize as dq.size does (the student's size report is unchanged)", function()
    m:set_quant("2-2-8")
    local q = m:quant()
    local size = dq.size.report(config, { bits = "2-2-8" })
    assert.are.equal(size.quantized_linear_params, q.quantized_weight_numel)
    assert.are.equal(size.embedding_params, q.quantized_embedding_numel)
    assert.are.equal(3 * 6 + 2 * 10, q.quantized_weights)
    assert.are.equal(3 * (4 + 4) + 2 * (7 + 8), q.quantized_activations)
    assert.are.equal("2-2-8", q.bits)
    assert.are.same({ bits = 2, method = "auto", granularity = "row", clip = 2.5 }, q.embedding)
    -- dq.size's own figures for bart-base (DQBART.md section 6) stay as they were
    local base = { vocab_size = 50265, d_model = 768, encoder_layers = 6, decoder_layers = 6, encoder_ffn_dim = 3072,
      decoder_ffn_dim = 3072, max_position_embeddings = 1024 }
    assert.are.equal("39.6", ("%.1f"):format(dq.size.report(base, { bits = "2-2-8" }).mib))
    assert.are.equal("138.1", ("%.1f"):format(dq.size.report(base, { bits = "8-8-8" }).mib))
  end)

  it("take W-E-A widths 2..8 and 16, and 32 for off, per role", function()
    for _, wea in ipairs({ "3-5-7", "16-16-16", "8-32-8", "32-2-32", "32-32-4" }) do
      m:set_quant(wea)
      assert.are.equal(wea, m:quant().bits)
      m:eval():forward(batch())
    end
    assert.are.equal(0, m:set_quant("32-2-32"):quant().quantized_weights)
    assert.are.equal(0, m:set_quant("32-32-4"):quant().quantized_embedding_numel)
  end)

  it("select linears, attention operands and quantizers per stack and per layer", function()
    m:set_quant({ bits = "2-2-8", linears = { "fc1" } })
    assert.are.equal(5, m:quant().quantized_weights)
    assert.are.equal(5 + 3 * 4 + 2 * 8, m:quant().quantized_activations)
    m:set_quant({ bits = "8-8-8", linears = "ffn", attention = { "probs" }, cross_attention = "none",
      decoder = { [1] = { linears = { "self", "cross_k", "cross_v" }, cross_attention = "all" } } })
    local q = m:quant()
    assert.are.equal(3 * 2 + 2 + 6, q.quantized_weights)
    -- inputs: 2 per encoder layer, 2 + (qkv, out, kv) in decoder layer 1; operands: probs of 3 + 2 self
    -- attentions and the 4 cross operands of decoder layer 1
    assert.are.equal(3 * 2 + 2 + 3 + 5 + 4, q.quantized_activations)
    m:eval():forward(batch())
    m:set_quant({ bits = "4-4-8", weight = { method = "sym", granularity = "row" }, embedding = { method = "asym" },
      activation = { granularity = "row" } })
    assert.are.same({ bits = 4, method = "sym", granularity = "row", clip = 2.5 }, m:quant().weight)
    m:eval():forward(batch())
    local w = m:param("model.decoder.layers.1.fc2.weight")
    assert.is_true(identical(m:working_param("model.decoder.layers.1.fc2.weight"),
      dq.quant.quantize(w, { method = "sym", bits = 4, granularity = "row" })))
    -- binary weights need a 1-bit role
    m:set_quant({ bits = "2-2-8", weight = { method = "bwn", bits = 1 } })
    assert.are.equal(1, m:quant().weight.bits)
    -- dq.quant.plan's output is a plan, and opts.clip replaces every role's clip
    m:set_quant(dq.quant.plan("2-2-8", 2.5), { clip = 1.5 })
    assert.are.equal(1.5, m:quant().activation.clip)
  end)

  it("refuse what cannot be done, naming it, and keep the plan in force", function()
    m:set_quant("2-2-8")
    local function err(spec, pattern, opts)
      local ok, msg = pcall(m.set_quant, m, spec, opts)
      assert.is_false(ok)
      assert.is_truthy(tostring(msg):find(pattern, 1, true), msg)
      assert.are.equal("2-2-8", m:quant().bits)
    end
    err("9-2-8", "weight bits 9")
    err({ bits = "2-2-8", linears = { "q" } }, "some but not all of self-attention q, k, v")
    err({ bits = "2-2-8", decoder = { [0] = { linears = { "cross_k" } } } }, "one of cross-attention k, v")
    err({ bits = "2-2-8", linears = { "fc3" } }, "linears[1] = 'fc3' is not one of")
    err({ bits = "2-2-8", attention = { "value" } }, "attention[1] = 'value' is not one of")
    err({ bits = "2-2-8", encoder = { [0] = { linears = { "cross_q" } } } }, "encoder layers have no cross-attention")
    err({ bits = "2-2-8", encoder = { [3] = {} } }, "encoder layer 3 does not exist")
    err({ bits = "2-2-8", encoder = { [0] = { cross_attention = "all" } } }, "unknown key 'cross_attention'")
    err({ bits = "2-2-8", weight = { method = "twn", bits = 3 } }, "weight bits = 3 for the twn quantizer")
    err({ bits = "2-2-8", activation = { granularity = "head" } }, "granularity 'head' is not one of")
    err({ bits = "2-2-8", weights = {} }, "unknown key 'weights'")
    err("2-2-8", "clip -1", { clip = -1 })
    -- q, k, v may differ when activations stay in full precision
    m:set_quant({ bits = "2-2-32", linears = { "q", "fc2" } })
    assert.are.equal(5 + 5, m:quant().quantized_weights)
    assert.are.equal(0, m:quant().quantized_activations)
  end)
end)

-- ---- the command ---------------------------------------------------------------------------------

describe("dqbart forward --quant", function()
  local function run(args) return launcher.run("forward " .. args) end

  it("writes the quantized model's outputs and the latent-weight gradients", function()
    local out_path = os.tmpname()
    local log, code = run(("--model %s --inputs %sbart_inputs.safetensors --out %s --grads --quant 2-2-8 --clip 2.5")
      :format(MODEL, FIXTURES, out_path))
    assert.are.equal(0, code, log)
    local got = dq.safetensors.open(out_path):tensors()
    assert_none(max_abs_failures(got, expected("2-2-8"), 1e-4))
    assert.is_truthy(got["encoder_attentions.0"] and got["decoder_hidden_states.2"])
    os.remove(out_path)
  end)

  it("explains bad options", function()
    local log, code = run(("--model %s --inputs %sbart_inputs.safetensors --out /dev/null --quant 2-2"):format(
      MODEL, FIXTURES))
    assert.are_not.equal(0, code)
    assert.is_truthy(log:find("expected three bit widths", 1, true), log)
    log, code = run(("--model %s --inputs %sbart_inputs.safetensors --out /dev/null --clip 2"):format(MODEL, FIXTURES))
    assert.are_not.equal(0, code)
    assert.is_truthy(log:find("--clip needs --quant", 1, true), log)
  end)
end)

-- ---- CUDA ----------------------------------------------------------------------------------------

describe("a quantized student on CUDA against the PyTorch reimplementation", function()
  if cuda_skip.skipped("f32 and bf16 parity") then return end
  for _, case in ipairs({ { "f32", 1e-2, 5e-2 }, { "bf16", 0.1, 0.3 } }) do
    local dtype, tol_logits, tol_grads = case[1], case[2], case[3]
    for _, wea in ipairs({ "2-2-8", "8-8-8" }) do
      it(("%s in %s: logits within %g, gradients within %g (relative norm)"):format(wea, dtype, tol_logits, tol_grads),
        function()
          local m = load("cuda", dtype):set_quant(wea)
          local got, want = run_all(m, "cuda"), expected(wea)
          local _, rel = diff(got.logits, want.logits)
          assert.is_true(rel <= tol_logits, ("logits relative difference %.3g"):format(rel))
          local grel = grads_rel(got, want)
          assert.is_true(grel <= tol_grads, ("gradients relative difference %.3g"):format(grel))
          m:free()
        end)
    end
  end
end)
