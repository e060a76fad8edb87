-- Generation (engine/dqbart_generate.h, dq.generate, `dqbart generate`,
-- `dqbart eval`): parity with transformers' generate, the decoder's
-- incremental step against the full forward, sampling, quantized models,
-- the CLI.
--
-- Fixtures (spec/fixtures/make_generate_fixtures.py, transformers 5.24):
-- a BART and an mBART tiny model trained a few hundred steps on a noisy
-- copy task (so beams disagree and EOS comes at varying steps), and 22
-- cases: right-padded batches of sources of different lengths with greedy
-- and beam search settings (beams 3/4/6, length penalty -0.5/0.6/1/2,
-- early_stopping true/false/"never", min_length, max_length,
-- no_repeat_ngram_size 0/1/3, forced BOS from mBART's
-- generation_config.json, forced EOS) and the sequences (and beam scores)
-- transformers returned. Tokens must be identical and beam scores within
-- 1e-4 (float rounding differs, search decisions do not).
local ffi = require("ffi")
local dq = require("dqbart")
local engine = require("dqbart.generate_engine")
local cuda_skip = require("cuda_skip")
local expect = require("expect_error")
local files = require("files")
local launcher = require("launcher")

local FIXTURES = "spec/fixtures/generate/"
local cases = dofile(FIXTURES .. "cases.lua")

local models = {}
local function model(name, opts)
  local key = name .. ":" .. (opts and (opts.device .. (opts.dtype or "")) or "cpu")
  if not models[key] then models[key] = dq.model.load(FIXTURES .. name, opts) end
  return models[key]
end

local function ids_tensor(rows, device) return dq.tensor(rows, { dtype = "i64", device = device }) end

local function joined(seq) return table.concat(seq, " ") end

-- Run a fixture case; returns a list of problems (empty when it matches).
local function check_case(m, c, device)
  local ids, mask = ids_tensor(c.input_ids, device), ids_tensor(c.attention_mask, device)
  local seqs, scores = dq.generate(m, ids, mask, c.options)
  local problems = {}
  for i, want in ipairs(c.sequences) do
    if joined(seqs[i]) ~= joined(want) then
      problems[#problems + 1] = ("%s/%s row %d: got %s, transformers %s"):format(c.model, c.name, i,
        joined(seqs[i]), joined(want))
    end
    if c.scores and math.abs(scores[i] - c.scores[i]) > 1e-4 then
      problems[#problems + 1] = ("%s/%s row %d: score %.6f, transformers %.6f"):format(c.model, c.name, i,
        scores[i], c.scores[i])
    end
  end
  return problems
end

-- Log-softmax of row t of logits [1, T, V] at token id (host math).
local function log_prob(logits, t, id)
  local c = logits:to("f32", "cpu")
  local V = tonumber(c.shape[2])
  local p = ffi.cast("float*", c.data) + t * V
  local mx = -math.huge
  for v = 0, V - 1 do if p[v] > mx then mx = p[v] end end
  local s = 0
  for v = 0, V - 1 do s = s + math.exp(p[v] - mx) end
  local lp = p[id] - mx - math.log(s)
  c:free()
  return lp
end

-- An all-ones attention mask [1, n]. (Passed explicitly: dq_model_forward
-- without a mask reads whatever mask a previous padded forward left.)
local function ones(n)
  local row = {}
  for i = 1, n do row[i] = 1 end
  return ids_tensor({ row })
end

-- The model's full (teacher-forced) forward on one source and a generated
-- sequence: the sum of log-probabilities of its tokens after the first.
local function forward_log_likelihood(m, src, seq)
  local dec = {}
  for i = 1, #seq - 1 do dec[i] = seq[i] end
  m:forward({ input_ids = ids_tensor({ src }), attention_mask = ones(#src), decoder_input_ids = ids_tensor({ dec }) })
  local logits = m:output("logits")
  local total = 0
  for t = 1, #seq - 1 do total = total + log_prob(logits, t - 1, seq[t + 1]) end
  return total
end

local SOURCES = { { 0, 5, 6, 7, 8, 9, 10, 11, 2 }, { 0, 9, 8, 12, 13, 2 }, { 0, 30, 31, 2 },
  { 0, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 2 } }

describe("generate: parity with transformers", function()
  it("gives transformers' sequences and beam scores for every fixture case (CPU)", function()
    local problems = {}
    for _, c in ipairs(cases) do
      for _, p in ipairs(check_case(model(c.model), c)) do problems[#problems + 1] = p end
    end
    assert(#problems == 0, table.concat(problems, "\n"))
    assert.are.equal(22, #cases)
  end)

  it("covers what the settings promise: beams differ from greedy, EOS at varying steps", function()
    local by = {}
    for _, c in ipairs(cases) do by[c.model .. "/" .. c.name] = c end
    local greedy, beam = by["bart/greedy"].sequences, by["bart/beam4"].sequences
    local lengths, differ = {}, false
    for _, c in ipairs(cases) do
      for _, s in ipairs(c.sequences) do lengths[#s] = true end
    end
    for i = 1, #greedy do differ = differ or joined(greedy[i]) ~= joined(beam[i]) end
    local n = 0
    for _ in pairs(lengths) do n = n + 1 end
    assert.is_true(n >= 8, "sequence lengths should vary")
    -- the two batches differ, so compare the beam case with greedy on its own batch
    local c = by["bart/beam4"]
    local m = model("bart")
    local g = dq.generate(m, ids_tensor(c.input_ids), ids_tensor(c.attention_mask), { num_beams = 1, max_length = 24 })
    differ = false
    for i = 1, #g do differ = differ or joined(g[i]) ~= joined(c.sequences[i]) end
    assert.is_true(differ, "beam search should find something greedy search does not")
    -- mBART's forced BOS (from its generation_config.json) is the first generated token
    for _, s in ipairs(by["mbart/defaults"].sequences) do assert.are.equal(45, s[2]) end
  end)

  it("gives each source the same result alone as in a padded batch", function()
    local m = model("bart")
    local opts = { num_beams = 4, max_length = 20, no_repeat_ngram_size = 3 }
    local batch = dq.generate(m, SOURCES, nil, opts)
    for i, src in ipairs(SOURCES) do
      local alone = dq.generate(m, { src }, nil, opts)
      assert.are.equal(joined(alone[1]), joined(batch[i]))
    end
  end)
end)

describe("generate: the incremental decoder", function()
  it("scores a beam result exactly as the full forward does (length penalty 1)", function()
    local m = model("bart")
    for _, src in ipairs(SOURCES) do
      local seqs, scores = dq.generate(m, { src }, nil, { num_beams = 3, max_length = 16, length_penalty = 1.0,
        forced_eos_token_id = false })
      local seq = seqs[1]
      local ll = forward_log_likelihood(m, src, seq)
      assert.is_true(math.abs(scores[1] * (#seq - 1) - ll) < 1e-4 * math.max(1, math.abs(ll)),
        ("score %.6f x %d vs forward %.6f"):format(scores[1], #seq - 1, ll))
    end
  end)

  it("reads quantized weights: weight-only quantization scores as the quantized full forward", function()
    local m = dq.model.load(FIXTURES .. "mbart")
    m:set_quant("2-2-32")
    local src = { 5, 6, 7, 8, 9, 2, 44 }
    local seqs, scores = dq.generate(m, { src }, nil, { num_beams = 2, max_length = 14, forced_eos_token_id = false,
      forced_bos_token_id = false })
    local ll = forward_log_likelihood(m, src, seqs[1])
    assert.is_true(math.abs(scores[1] * (#seqs[1] - 1) - ll) < 1e-4 * math.max(1, math.abs(ll)))
    local fp = dq.generate(model("mbart"), { src }, nil, { num_beams = 2, max_length = 14,
      forced_eos_token_id = false, forced_bos_token_id = false })
    assert.are_not.equal(joined(fp[1]), joined(seqs[1]), "2-bit weights should change the output")
    m:free()
  end)

  it("decodes quantized activations: 32-32-32 is full precision, 2-2-8 and 8-8-8 run and change results", function()
    local m = dq.model.load(FIXTURES .. "bart")
    local opts = { num_beams = 4, max_length = 16 }
    local fp = dq.generate(m, SOURCES, nil, opts)
    m:set_quant("32-32-32")
    local same = dq.generate(m, SOURCES, nil, opts)
    for i = 1, #fp do assert.are.equal(joined(fp[i]), joined(same[i])) end
    for _, bits in ipairs({ "8-8-8", "2-2-8" }) do
      m:set_quant(bits)
      local q = dq.generate(m, SOURCES, nil, opts)
      local changed = false
      for i = 1, #q do
        assert.is_true(#q[i] >= 2 and #q[i] <= 16)
        for _, id in ipairs(q[i]) do assert.is_true(id >= 0 and id < 48) end
        changed = changed or joined(q[i]) ~= joined(fp[i])
      end
      if bits == "2-2-8" then assert.is_true(changed, "2-2-8 should change some output") end
    end
    m:set_quant(nil)
    local back = dq.generate(m, SOURCES, nil, opts)
    for i = 1, #fp do assert.are.equal(joined(fp[i]), joined(back[i])) end
    m:free()
  end)

  it("reuses a workspace across batch shapes and modes with the same results as a fresh one", function()
    local m = model("mbart")
    local ws = engine.workspace()
    local settings = { { num_beams = 4, max_length = 12 }, { num_beams = 1, max_length = 20 },
      { num_beams = 6, max_length = 9, min_length = 9 }, { do_sample = true, seed = 3, max_length = 10 } }
    for _, o in ipairs(settings) do
      for _, batch in ipairs({ { SOURCES[1] }, SOURCES }) do
        local o1, o2 = { workspace = ws }, {}
        for k, v in pairs(o) do o1[k], o2[k] = v, v end
        local with = dq.generate(m, batch, nil, o1)
        o2.workspace = engine.workspace()
        local fresh = dq.generate(m, batch, nil, o2)
        o2.workspace:free()
        for i = 1, #batch do assert.are.equal(joined(fresh[i]), joined(with[i])) end
      end
    end
    assert.is_true(ws:bytes() > 0)
    local st = ws:stats()
    assert.is_true(st.steps >= 1 and st.batch == #SOURCES)
    ws:free()
  end)

  it("restores the model's training mode", function()
    local m = dq.model.load(FIXTURES .. "bart")
    m:train()
    dq.generate(m, { SOURCES[1] }, nil, { max_length = 6 })
    assert.is_true(m:info().training)
    m:free()
  end)
end)

describe("generate: sampling", function()
  local m
  local function sample(o) return dq.generate(m or model("bart"), SOURCES, nil, o) end
  local greedy_opts = { num_beams = 1, max_length = 20, forced_eos_token_id = false }
  local function with(o)
    local t = {}
    for k, v in pairs(greedy_opts) do t[k] = v end
    for k, v in pairs(o) do t[k] = v end
    return t
  end

  it("is reproducible for a seed and changes with it", function()
    local a = sample(with({ do_sample = true, seed = 7, top_k = 0 }))
    local b = sample(with({ do_sample = true, seed = 7, top_k = 0 }))
    local c = sample(with({ do_sample = true, seed = 8, top_k = 0 }))
    local same_ab, same_ac = true, true
    for i = 1, #a do
      same_ab = same_ab and joined(a[i]) == joined(b[i])
      same_ac = same_ac and joined(a[i]) == joined(c[i])
    end
    assert.is_true(same_ab)
    assert.is_false(same_ac)
  end)

  it("equals greedy search with top_k = 1, with a tiny top_p and at a tiny temperature", function()
    local g = sample(greedy_opts)
    for _, o in ipairs({ { top_k = 1 }, { top_k = 0, top_p = 1e-6 }, { top_k = 0, temperature = 1e-4 } }) do
      o.do_sample = true
      o.seed = 11
      local s = sample(with(o))
      for i = 1, #g do assert.are.equal(joined(g[i]), joined(s[i])) end
    end
  end)

  it("spreads more with a higher temperature (more distinct tokens over seeds)", function()
    local function distinct(temperature)
      local seen, n = {}, 0
      for seed = 1, 6 do
        for _, s in ipairs(sample(with({ do_sample = true, seed = seed, top_k = 0, temperature = temperature }))) do
          for j = 2, #s do
            if not seen[s[j]] then seen[s[j]], n = true, n + 1 end
          end
        end
      end
      return n
    end
    local cold, warm, hot = distinct(0.3), distinct(1.0), distinct(3.0)
    assert.is_true(cold < warm and warm < hot, ("distinct tokens %d, %d, %d"):format(cold, warm, hot))
  end)

  it("keeps to top_k's tokens", function()
    -- with top_k = 2 every sampled token is one of the two best under the
    -- model, checked against the full forward
    local mm = model("bart")
    local src = SOURCES[1]
    local s = dq.generate(mm, { src }, nil, with({ do_sample = true, seed = 5, top_k = 2, temperature = 5 }))[1]
    local dec = {}
    for i = 1, #s - 1 do dec[i] = s[i] end
    mm:forward({ input_ids = ids_tensor({ src }), attention_mask = ones(#src), decoder_input_ids = ids_tensor({ dec }) })
    local logits = mm:output("logits"):to("f32", "cpu")
    local p = ffi.cast("float*", logits.data)
    for t = 1, #s - 1 do
      local row, tok, above = p + (t - 1) * 48, s[t + 1], 0
      for v = 0, 47 do if row[v] > row[tok] then above = above + 1 end end
      assert.is_true(above <= 1, ("step %d: token %d has %d better tokens"):format(t, tok, above))
    end
  end)
end)

describe("generate: options and errors", function()
  it("takes the model's generation defaults as transformers does", function()
    local o = dq.generate.options(model("mbart"))
    assert.are.equal(45, o.forced_bos_token_id)
    assert.are.equal(2, o.forced_eos_token_id)
    assert.are.equal(2, o.decoder_start_token_id)
    assert.are.equal(20, o.max_length)
    assert.are.equal(1, o.num_beams)
    assert.are.equal(50, o.top_k)
    local base = dq.generate.options(dq.model.new("spec/fixtures/configs/bart_base"))
    assert.are.equal(4, base.num_beams)
    assert.are.equal(3, base.no_repeat_ngram_size)
    assert.are.equal(true, base.early_stopping)
    assert.are.equal(0, base.forced_bos_token_id)
    local o2 = dq.generate.options(model("bart"), { beams = 5, max_new_tokens = 10, early_stopping = "never" })
    assert.are.equal(5, o2.num_beams)
    assert.are.equal(11, o2.max_length)
    assert.are.equal("never", o2.early_stopping)
  end)

  it("refuses bad settings, naming them", function()
    local m = model("bart")
    local function gen(o) return function() dq.generate(m, SOURCES, nil, o) end end
    expect.rejects(gen({ num_beam = 4 }), "unknown option num_beam", "num_beams")
    expect.rejects(gen({ num_beams = 0 }), "num_beams is 0")
    expect.rejects(gen({ num_beams = 2, do_sample = true }), "beam sampling")
    expect.rejects(gen({ max_length = 1 }), "max_length is 1")
    expect.rejects(gen({ max_length = 66 }), "max_length is 66", "max_position_embeddings")
    expect.rejects(gen({ eos_token_id = 48 }), "eos_token_id is 48")
    expect.rejects(gen({ do_sample = true, top_p = 0 }), "top_p")
    expect.rejects(gen({ early_stopping = "sometimes" }), "early_stopping")
    expect.rejects(function() dq.generate(m, { {} }, nil, {}) end, "no tokens")
    expect.rejects(function() dq.generate(m, { { 0, 99, 2 } }, nil, {}) end, "outside the vocabulary")
  end)
end)

describe("generate: CUDA against the CPU", function()
  if cuda_skip.skipped("needs a CUDA device for generation on the GPU") then return end

  it("gives the CPU's (and transformers') sequences in f32", function()
    local problems = {}
    for _, c in ipairs(cases) do
      for _, p in ipairs(check_case(model(c.model, { device = "cuda" }), c, "cuda")) do
        problems[#problems + 1] = p
      end
    end
    assert(#problems == 0, table.concat(problems, "\n"))
  end)

  it("mostly agrees in bf16, and samples as the CPU does from the same logits", function()
    local agree, total = 0, 0
    for _, c in ipairs(cases) do
      local seqs = dq.generate(model(c.model, { device = "cuda", dtype = "bf16" }), ids_tensor(c.input_ids, "cuda"),
        ids_tensor(c.attention_mask, "cuda"), c.options)
      for i, want in ipairs(c.sequences) do
        total = total + 1
        if joined(seqs[i]) == joined(want) then agree = agree + 1 end
      end
    end
    assert.is_true(agree >= 0.7 * total, ("bf16 agrees on %d of %d"):format(agree, total))
    local o = { do_sample = true, seed = 4, max_length = 16, top_k = 0 }
    local cpu = dq.generate(model("bart"), SOURCES, nil, o)
    local gpu = dq.generate(model("bart", { device = "cuda" }), SOURCES, nil, o)
    local same = 0
    for i = 1, #cpu do if joined(cpu[i]) == joined(gpu[i]) then same = same + 1 end end
    assert.is_true(same >= #cpu - 1)
  end)

  it("decodes quantized models on the GPU as on the CPU (2-2-32: weights only)", function()
    local cpu = dq.model.load(FIXTURES .. "bart")
    local gpu = dq.model.load(FIXTURES .. "bart", { device = "cuda" })
    cpu:set_quant("2-2-32")
    gpu:set_quant("2-2-32")
    local a = dq.generate(cpu, SOURCES, nil, { num_beams = 4, max_length = 16 })
    local b = dq.generate(gpu, SOURCES, nil, { num_beams = 4, max_length = 16 })
    for i = 1, #a do assert.are.equal(joined(a[i]), joined(b[i])) end
    gpu:set_quant("2-2-8")
    local q = dq.generate(gpu, SOURCES, nil, { num_beams = 4, max_length = 16 })
    assert.are.equal(#SOURCES, #q)
    cpu:free()
    gpu:free()
  end)
end)

-- ---- the CLI --------------------------------------------------------------------------------

-- A tiny random BART with the committed byte-level BPE tokenizer (vocab
-- 2000), saved with its generation settings: for text in, text out.
local function text_model()
  local dir = files.tempdir()
  local m = dq.model.new({ model_type = "bart", vocab_size = 2000, d_model = 16, encoder_layers = 1,
    decoder_layers = 1, encoder_attention_heads = 2, decoder_attention_heads = 2, encoder_ffn_dim = 32,
    decoder_ffn_dim = 32, max_position_embeddings = 128, pad_token_id = 1, bos_token_id = 0, eos_token_id = 2,
    decoder_start_token_id = 2, forced_eos_token_id = 2,
    generation = { decoder_start_token_id = 2, eos_token_id = 2, pad_token_id = 1, bos_token_id = 0,
      forced_eos_token_id = 2, num_beams = 2, max_length = 12 } })
  local p = m:params()
  dq.scale(dq.randn(p:nelement(), { seed = 3 }), 0.7, p)
  m:save(dir)
  m:free()
  for _, f in ipairs({ "vocab.json", "merges.txt", "tokenizer.json" }) do
    files.copy("spec/fixtures/tokenizers/bart_bpe/" .. f, dir .. "/" .. f)
  end
  return dir
end

describe("dqbart generate", function()
  it("--ids writes dq.generate's sequences in the input order, whatever the batching", function()
    local src = {}
    for i, s in ipairs(SOURCES) do src[i] = joined(s) end
    local data = files.temp_file(table.concat(src, "\n") .. "\n")
    local out = files.fresh_path()
    local log, code = launcher.run(("generate --model %sbart --data %s --ids --out %s --beams 4 --max-length 16 "
      .. "--no-repeat-ngram-size 3 --batch-size 3"):format(FIXTURES, data, out))
    assert.are.equal(0, code, log)
    local want = dq.generate(model("bart"), SOURCES, nil, { num_beams = 4, max_length = 16, no_repeat_ngram_size = 3 })
    local got = files.lines(out)
    assert.are.equal(#SOURCES, #got)
    for i = 1, #want do assert.are.equal(joined(want[i]), got[i]) end
    assert.is_truthy(log:find("4 predictions", 1, true), log)
    os.remove(out)
    os.remove(data)
  end)

  it("turns text into one line of text per source, and refuses bad input", function()
    local dir = text_model()
    local data = files.write(files.fresh_path() .. ".jsonl", table.concat({
      '{"document": "The quick brown fox jumps over the lazy dog.", "summary": "a fox"}',
      '{"document": "Packages for Debian.\\nSecond line.", "summary": "packages"}',
      '{"document": "short", "summary": "s"}',
    }, "\n") .. "\n")
    local out = files.fresh_path()
    local log, code = launcher.run(("generate --model %s --data %s --out %s --batch-size 2 --quiet"):format(dir, data,
      out))
    assert.are.equal(0, code, log)
    local got = files.lines(out)
    assert.are.equal(3, #got)
    -- the same texts from the library (the model's generation_config: 2 beams, max_length 12)
    local m = dq.model.load(dir)
    local tok = dq.tokenizer.load(dir)
    local want = dq.generate.texts(m, tok, { "The quick brown fox jumps over the lazy dog.",
      "Packages for Debian.\nSecond line.", "short" })
    for i = 1, 3 do
      assert.are.equal(want[i], got[i])
      assert.is_nil(got[i]:find("\n"))
    end
    m:free()
    local _, bad = launcher.run(("generate --model %s --data %s --out %s --field nope"):format(dir, data, out))
    assert.are.equal(1, bad)
    local msg, bad2 = launcher.run(("generate --model %s --data %s --out %s --beams 0"):format(dir, data, out))
    assert.are.equal(1, bad2)
    assert.is_truthy(msg:find("--beams", 1, true), msg)
    os.remove(out)
    os.remove(data)
    files.remove_tree(dir)
  end)
end)

describe("dqbart eval", function()
  it("scores generated text (ROUGE 100 against itself), prints JSON, a table and the size", function()
    local dir = text_model()
    local docs = { "The quick brown fox jumps over the lazy dog.", "Packages for Debian systems.", "short text" }
    local m = dq.model.load(dir)
    local tok = dq.tokenizer.load(dir)
    local preds = dq.generate.texts(m, tok, docs)
    m:free()
    local rows = {}
    for i, d in ipairs(docs) do
      rows[i] = ('{"document": %s, "summary": %s}'):format(dq.metrics.to_json(d), dq.metrics.to_json(preds[i]))
    end
    local data = files.write(files.fresh_path() .. ".jsonl", table.concat(rows, "\n") .. "\n")
    local pred = files.fresh_path()
    local log, code = launcher.run(("eval --model %s --data %s --quiet --pred %s"):format(dir, data, pred))
    assert.are.equal(0, code, log)
    local json = log:match("^(%b{})")
    assert.is_truthy(json, log)
    local rl = tonumber(json:match('"rougeLsum": ([%d.]+)'))
    local r1 = tonumber(json:match('"rouge1": ([%d.]+)'))
    local nonempty = 0
    for _, p in ipairs(preds) do if p:match("%w") then nonempty = nonempty + 1 end end
    assert.is_true(nonempty > 0, "the random model should write something")
    assert.is_true(math.abs(r1 - 100 * nonempty / #preds) < 1e-6, json)
    assert.is_true(math.abs(rl - 100 * nonempty / #preds) < 1e-6, json)
    assert.is_truthy(json:find('"mib"', 1, true))
    assert.is_truthy(log:find("R-Lsum", 1, true), log)
    local written = files.lines(pred)
    for i = 1, #preds do assert.are.equal(preds[i], written[i]) end
    -- BLEU and a quantized run
    local log2, code2 = launcher.run(("eval --model %s --data %s --quiet --metric bleu --quant 8-8-8 --json"):format(
      dir, data))
    assert.are.equal(0, code2, log2)
    assert.is_truthy(log2:find('"bleu"', 1, true), log2)
    assert.is_truthy(log2:find('"quant": "8-8-8"', 1, true), log2)
    -- a recipe supplies the fields, generation settings and quantization
    local recipe = files.write(files.fresh_path() .. ".lua", ([[
return dq.recipe {
  teacher = { path = %q },
  data = { dir = "spec/fixtures/debsum", max_source_length = 64 },
  quant = { bits = "2-2-8" },
  eval = { beams = 3, max_length = 9, min_length = 4, no_repeat_ngram_size = 0 },
}]]):format(dir))
    local log3, code3 = launcher.run(("eval --model %s --data %s --quiet --recipe %s --json"):format(dir, data, recipe))
    assert.are.equal(0, code3, log3)
    for _, needle in ipairs({ '"num_beams": 3', '"max_length": 9', '"min_length": 4', '"quant": "2-2-8"' }) do
      assert.is_truthy(log3:find(needle, 1, true), needle .. " in " .. log3)
    end
    os.remove(recipe)
    os.remove(pred)
    os.remove(data)
    files.remove_tree(dir)
  end)

  it("quantizes a student saved with its plan as the run did, unless --quant says otherwise", function()
    local dir = text_model()
    local saved = files.fresh_path()
    local m = dq.model.load(dir)
    m:set_quant("2-2-8", { clip = 2.0 })
    m:save(saved)
    local spec, opts, bits = dq.model.saved_quant(saved)
    assert.are.equal("2-2-8", spec)
    assert.are.same({ clip = 2.0 }, opts)
    assert.are.equal("2-2-8", bits)
    assert.is_nil(dq.model.saved_quant(dir))
    local data = files.write(files.fresh_path() .. ".jsonl",
      '{"document": "Packages for Debian systems.", "summary": "x"}\n{"document": "short text", "summary": "y"}\n')
    local by_plan, explicit = files.fresh_path(), files.fresh_path()
    local log, code = launcher.run(("generate --model %s --data %s --out %s --quiet"):format(saved, data, by_plan))
    assert.are.equal(0, code, log)
    log, code = launcher.run(("generate --model %s --data %s --out %s --quiet --quant 2-2-8"):format(dir, data,
      explicit))
    assert.are.equal(0, code, log)
    assert.are.same(files.lines(explicit), files.lines(by_plan))
    local log2 = launcher.run(("eval --model %s --data %s --quiet --json"):format(saved, data))
    assert.is_truthy(log2:find('"quant": "2-2-8"', 1, true), log2)
    local log3 = launcher.run(("eval --model %s --data %s --quiet --json --quant 32-32-32"):format(saved, data))
    assert.is_truthy(log3:find('"quant": "32-32-32"', 1, true), log3)
    -- saving without a plan removes the old one
    m:set_quant(nil)
    m:save(saved)
    assert.is_nil(dq.model.saved_quant(saved))
    m:free()
    for _, f in ipairs({ data, by_plan, explicit }) do os.remove(f) end
    for _, d in ipairs({ dir, saved }) do files.remove_tree(d) end
  end)

  it("is what the trainer's validation calls: evaluate.run on examples", function()
    local evaluate = require("dqbart.evaluate")
    local dir = text_model()
    local m = dq.model.load(dir)
    local tok = dq.tokenizer.load(dir)
    local examples = { { source = "one two three", target = "one two" }, { source = "four", target = "four" } }
    local s = evaluate.run(m, tok, examples, { metric = "rougeLsum", beams = 2, num_beams = 2, max_length = 8,
      early_stopping = true, batch_size = 1, device = "cpu" })
    assert.are.equal("rougeLsum", s.metric)
    assert.are.equal(2, s.count)
    assert.are.equal(2, #s.predictions)
    local direct = dq.metrics.rouge(s.predictions, { "one two", "four" }, { split_sentences = true })
    assert.are.equal(direct.rougeLsum.f, s.rougeLsum)
    for k, v in pairs(s) do
      if type(v) == "number" then
        assert.is_truthy(({ rouge1 = 1, rouge2 = 1, rougeL = 1, rougeLsum = 1, count = 1 })[k], k)
      end
    end
    local b = evaluate.run(m, tok, { sources = { "a b" }, targets = { "a b" } }, { metric = "bleu", max_length = 6 })
    assert.is_number(b.bleu)
    m:free()
    files.remove_tree(dir)
  end)
end)
