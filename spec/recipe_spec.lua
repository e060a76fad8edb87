-- dq.recipe: defaults (the reference's, per task and preset), explicit
-- values kept, unknown keys with suggestions, wrong types, --set parsing,
-- environment values, cross checks, layer maps; every recipe in recipes/
-- resolves; `dqbart RECIPE --dry-run` and a plain run through the launcher.
local dq = require("dqbart")
local recipe = dq.recipe
local files = require("files")
local launcher = require("launcher")
local err_of = require("expect_error").message

local function resolve(tbl, opts)
  opts = opts or {}
  opts.source = opts.source or "recipes/x.lua"
  opts.getenv = opts.getenv or function() return nil end
  return recipe.resolve(tbl, opts)
end

local T = { teacher = { path = "teacher-dir" } }
local function with(extra)
  local t = recipe.copy(T)
  for k, v in pairs(extra) do t[k] = v end
  return t
end

describe("recipe defaults", function()
  it("are the reference's (DQBART.md section 5)", function()
    local r = resolve(T)
    assert.are.equal(3e-5, r.optim.lr)
    assert.are.same({ 0.9, 0.999 }, r.optim.betas)
    assert.are.equal(1e-6, r.optim.eps)
    assert.are.equal("transformers", r.optim.variant)
    assert.are.equal(0, r.optim.weight_decay)
    assert.are.equal(0, r.optim.max_grad_norm)
    assert.are.equal("linear", r.schedule.kind)
    assert.are.equal(20, r.schedule.epochs)
    assert.are.equal(0.05, r.schedule.warmup_ratio)
    assert.are.equal(8, r.batch.size)
    assert.are.equal(2, r.batch.accumulation)
    assert.are.equal(28, r.seed)
    assert.are.equal(1024, r.data.max_source_length)
    assert.are.equal(128, r.data.max_target_length)
    assert.are.equal("8-8-8", r.quant.bits)
    assert.are.equal(2.5, r.quant.clip)
    assert.is_true(r.eval.each_epoch)
    assert.are.equal("rougeLsum", r.eval.metric)
    for _, term in ipairs(recipe.TERMS) do
      assert.are.equal(term == "kl" and 0 or 1, r.distill.weights[term], term) -- kl: beyond the reference
    end
    assert.are.equal(2, r.distill.temperature)
    assert.are.equal("runs/x", r.output_dir)
    assert.are.equal("x", r.name)
    assert.are.equal("teacher-dir", r.data.tokenizer)
  end)

  it("follow the task: generation settings, fields and metric", function()
    local x = resolve(with({ task = "xsum" }))
    assert.are.same({ 6, 1.0, 62, 11, 3 }, { x.eval.beams, x.eval.length_penalty, x.eval.max_length,
      x.eval.min_length, x.eval.no_repeat_ngram_size })
    assert.are.same({ "document", "summary" }, { x.data.source, x.data.target })
    local c = resolve(with({ task = "cnndm" }))
    assert.are.same({ 4, 2.0, 142, 56 }, { c.eval.beams, c.eval.length_penalty, c.eval.max_length, c.eval.min_length })
    assert.are.same({ "article", "highlights" }, { c.data.source, c.data.target })
    local w = resolve(with({ task = "wmt_enro" }))
    assert.are.equal("bleu", w.eval.metric)
    assert.are.equal("translation.en", w.data.source)
    -- The general default is XSUM's generation.
    local g = resolve(T)
    assert.are.equal(6, g.eval.beams)
  end)

  it("follow the distill preset, and explicit values win over it", function()
    local r = resolve(with({ distill = { preset = "weighted", weights = { dec_hid = 0 } } }))
    local w = r.distill.weights
    assert.are.same({ 1, 0.8, 0, 3, 3, 3, 3, 0, 3 }, { w.task, w.logits, w.kl, w.enc_att, w.dec_att, w.crs_att,
      w.enc_hid, w.dec_hid, w.enc_hid_last })
    -- 'kl': the task loss and the KL term only, at the temperature given
    r = resolve(with({ distill = { preset = "kl", temperature = 3 } }))
    w = r.distill.weights
    assert.are.same({ 1, 0, 1, 0, 0, 0, 0, 0, 0 }, { w.task, w.logits, w.kl, w.enc_att, w.dec_att, w.crs_att,
      w.enc_hid, w.dec_hid, w.enc_hid_last })
    assert.are.equal(3, r.distill.temperature)
  end)

  it("keep explicit values and record where each value came from", function()
    local r, info = resolve(with({ optim = { lr = 1e-4 }, eval = { every_steps = 500 } }),
      { sets = { "batch.size=4" } })
    assert.are.equal(1e-4, r.optim.lr)
    assert.are.equal(500, r.eval.every_steps)
    assert.is_false(r.eval.each_epoch)
    assert.are.equal(4, r.batch.size)
    assert.are.equal("recipe", info.sources["optim.lr"])
    assert.are.equal("default", info.sources["optim.eps"])
    assert.are.equal("--set", info.sources["batch.size"])
  end)

  it("fill a teacher.train spec, and only when one is given", function()
    assert.is_nil(resolve(T).teacher.train)
    local r = resolve({ teacher = { train = { d_model = 64 } }, data = { max_source_length = 100, max_target_length = 20 } })
    assert.are.equal(64, r.teacher.train.d_model)
    assert.are.equal(3, r.teacher.train.encoder_layers)
    assert.are.equal(100, r.teacher.train.max_positions)
    assert.are.equal("runs/x/teacher", r.teacher.train.dir)
    assert.are.equal("runs/x/teacher", r.data.tokenizer)
  end)

  it("turn quantization off as 32-32-32", function()
    assert.are.equal("32-32-32", resolve(with({ quant = { enabled = false } })).quant.bits)
    assert.matches("quant.enabled = false contradicts quant.bits = '2%-2%-8'",
      err_of(resolve, with({ quant = { enabled = false, bits = "2-2-8" } })))
  end)

  it("are documented: every key has a type, a doc string and a default description", function()
    local doc = recipe.doc()
    assert.matches("optim%.lr  %(a number above 0; default: 3e%-05%)", doc)
    assert.matches("eval%.beams  %(a positive integer; default: per task%)", doc)
    local function walk(node)
      for _, f in ipairs(node.fields) do
        assert.is_truthy(f.doc and #f.doc > 0, f.name)
        if f.kind == "section" then walk(f) else assert.is_truthy(f.type and f.type.name, f.name) end
      end
    end
    walk(recipe.schema)
  end)
end)

describe("suggestions for unknown names", function()
  local suggest = require("dqbart.suggest")

  it("count a swap of neighbours as one edit", function()
    assert.are.equal(1, suggest.distance("lr", "rl"))
    assert.are.equal(1, suggest.distance("sise", "size"))
    assert.are.equal(3, suggest.distance("kitten", "sitting"))
    assert.are.equal(4, suggest.distance("", "beam"))
  end)

  it("pick the nearest of a list or a set, ties in sorted order, never by table order", function()
    assert.are.equal("beams", suggest.nearest("bems", { "seed", "beams", "temperature" }))
    assert.are.equal("beams", suggest.nearest("bems", { seed = true, beams = true, temperature = true }))
    assert.are.equal("ab", suggest.nearest("a", { "ac", "ab" })) -- both one edit away
    assert.are.equal("ab", suggest.nearest("a", { ac = true, ab = true }))
    assert.is_nil(suggest.nearest("x", {}))
  end)
end)

describe("recipe errors", function()
  it("name an unknown key and the nearest valid one", function()
    assert.are.equal("unknown key 'optim.learning_rate' in recipe recipes/x.lua; did you mean 'optim.lr'?",
      err_of(resolve, with({ optim = { learning_rate = 1e-4 } })))
    assert.matches("unknown key 'optim%.epochs' .*did you mean 'schedule%.epochs'%?",
      err_of(resolve, with({ optim = { epochs = 3 } })))
    assert.matches("unknown key 'batch%.sise' .*did you mean 'batch%.size'%?", err_of(resolve, with({ batch = { sise = 3 } })))
    assert.matches("unknown key 'schedule%.num_train_epochs' .*did you mean 'schedule%.epochs'%?",
      err_of(resolve, with({ schedule = { num_train_epochs = 3 } })))
    assert.matches("unknown key 'learning_rate' .*did you mean 'optim%.lr'%?", err_of(resolve, with({ learning_rate = 1 })))
    assert.matches("unknown key 'distill%.weights%.logit' .*did you mean 'distill%.weights%.logits'%?",
      err_of(resolve, with({ distill = { weights = { logit = 1 } } })))
  end)

  it("name the expected type and the value", function()
    assert.are.equal("bad value for 'optim.lr' in recipe recipes/x.lua: expected a number above 0, got the string \"3e-5\"",
      err_of(resolve, with({ optim = { lr = "3e-5" } })))
    assert.matches("bad value for 'schedule%.kind' .*expected one of 'linear', 'cosine', 'constant', got the string \"poly\"",
      err_of(resolve, with({ schedule = { kind = "poly" } })))
    assert.matches("bad value for 'student%.encoder_layers' .*entry 2 is the string \"a\"",
      err_of(resolve, with({ student = { encoder_layers = { 0, "a" } } })))
    assert.matches("bad value for 'optim%.betas' .*expected a list of 2 numbers",
      err_of(resolve, with({ optim = { betas = { 0.9 } } })))
    assert.matches("bad value for 'quant%.bits' .*", err_of(resolve, with({ quant = { bits = "3-3" } })))
    assert.matches("bad value for 'optim' .*expected a table", err_of(resolve, with({ optim = 3 })))
    assert.matches("bad value for 'quant%.overrides' .*unknown key 'bitz'; did you mean 'bits'%?",
      err_of(resolve, with({ quant = { overrides = { ["model.*.fc1.weight"] = { bitz = 4 } } } })))
  end)

  it("catch contradictions between keys", function()
    assert.matches("no teacher", err_of(resolve, {}))
    assert.matches("teacher%.path and teacher%.train are both set",
      err_of(resolve, { teacher = { path = "x", train = {} } }))
    assert.matches("'teacher%.train%.heads'.*not divisible", err_of(resolve, { teacher = { train = { d_model = 30, heads = 4 } } }))
    assert.matches("'student%.decoder_layers'.*4 layers, but the teacher has 3",
      err_of(resolve, { teacher = { train = {} }, student = { decoder_layers = 4 } }))
    assert.matches("'distill%.encoder_map'.*2 entries for a student with 3",
      err_of(resolve, with({ student = { encoder_layers = 3 }, distill = { encoder_map = { 0, 5 } } })))
    assert.matches("'eval%.min_length'", err_of(resolve, with({ eval = { min_length = 100 } })))
    assert.matches("'device'", err_of(resolve, with({ device = "gpu" })))
  end)

  it("name the recipe file", function()
    local dir = files.tempdir()
    local path = files.write(dir .. "/typo.lua",
      "return dq.recipe { teacher = { path = 'x' }, optim = { learnig_rate = 1 } }\n")
    local e = err_of(recipe.load, path)
    assert.are.equal(("unknown key 'optim.learnig_rate' in recipe %s; did you mean 'optim.lr'?"):format(path), e)
    files.remove_tree(dir)
  end)
end)

describe("--set", function()
  it("reads values by the key's type", function()
    local function v(text) return select(2, recipe.parse_set(text)) end
    assert.are.equal(1e-4, v("optim.lr=1e-4"))
    assert.are.equal(3, v("schedule.epochs=3"))
    assert.is_false(v("quant.enabled=false"))
    assert.is_true(v("distill.enabled=yes"))
    assert.are.equal("2-2-8", v("quant.bits=2-2-8"))
    assert.are.same({ 0, 2, 5 }, v("student.encoder_layers=0,2,5"))
    assert.are.same({ 5 }, v("student.encoder_layers=5,"))
    assert.are.equal(5, v("student.encoder_layers=5"))
    assert.are.same({ 0.8, 0.99 }, v("optim.betas=0.8, 0.99"))
    assert.are.same({ "bias" }, v("optim.no_decay=bias"))
    assert.are.equal("cosine", v("schedule.kind=cosine"))
    assert.are.equal("a=b", v("name=a=b"))
    local path, value, cleared = recipe.parse_set("schedule.max_steps=none")
    assert.are.equal("schedule.max_steps", path)
    assert.is_nil(value)
    assert.is_true(cleared)
  end)

  it("overrides the recipe, creates sections and clears values", function()
    local r = resolve(with({ optim = { lr = 1 }, schedule = { max_steps = 10 } }), { sets = { "optim.lr=0.5",
      "teacher.path=other", "distill.weights.logits=0.25", "schedule.max_steps=nil" } })
    assert.are.equal(0.5, r.optim.lr)
    assert.are.equal("other", r.teacher.path)
    assert.are.equal(0.25, r.distill.weights.logits)
    assert.is_nil(r.schedule.max_steps)
  end)

  it("drops an optional section with none, and only an optional one", function()
    local r = resolve(with({ teacher = { train = { max_steps = 10 } } }), { sets = { "teacher.train=none",
      "teacher.path=elsewhere" } })
    assert.is_nil(r.teacher.train)
    assert.are.equal("elsewhere", r.teacher.path)
    assert.matches("'teacher.train' is a section; set one of its keys %(teacher%.train%.KEY=value%) or drop it "
      .. "%(teacher%.train=none%)", err_of(recipe.parse_set, "teacher.train=3"))
    assert.matches("'optim' is a section; set one of its keys %(optim%.KEY=value%)$",
      err_of(recipe.parse_set, "optim=none"))
  end)

  it("rejects unknown keys, sections, bad values and malformed text", function()
    assert.are.equal("unknown key 'optim.learning_rate' in --set optim.learning_rate=2; did you mean 'optim.lr'?",
      err_of(recipe.parse_set, "optim.learning_rate=2"))
    assert.matches("'optim' is a section", err_of(recipe.parse_set, "optim=3"))
    assert.matches("bad value for 'eval%.beams' in %-%-set eval%.beams=abc: expected a positive integer",
      err_of(recipe.parse_set, "eval.beams=abc"))
    assert.matches("bad value for 'schedule%.kind'", err_of(recipe.parse_set, "schedule.kind=poly"))
    assert.matches("expected key%.path=value", err_of(recipe.parse_set, "optim.lr"))
    assert.matches("a function cannot be given", err_of(recipe.parse_set, "step=x"))
  end)
end)

describe("environment values", function()
  local function env(tbl) return function(name) return tbl[name] end end

  it("fill paths from the environment and join data paths with data.dir", function()
    local r, info = resolve({ teacher = { path = recipe.env("DQBART_TEACHER") },
      data = { dir = recipe.env("DQBART_XSUM_DIR"), test = "/abs/test.jsonl" } },
      { getenv = env({ DQBART_TEACHER = "/models/t", DQBART_XSUM_DIR = "/data/xsum" }) })
    assert.are.equal("/models/t", r.teacher.path)
    assert.are.equal("/data/xsum/train.jsonl", r.data.train)
    assert.are.equal("/data/xsum/valid.jsonl", r.data.valid)
    assert.are.equal("/abs/test.jsonl", r.data.test)
    assert.are.equal("$DQBART_XSUM_DIR", info.sources["data.dir"])
    assert.are.same({}, info.missing)
  end)

  it("record unset variables with their hint, use a default when there is one, and let --set win", function()
    local tbl = { teacher = { path = recipe.env("DQBART_TEACHER", { hint = "download it" }) },
      data = { dir = recipe.env("DQBART_X_DIR", { default = "/sample" }) } }
    local r, info = resolve(tbl)
    assert.is_nil(r.teacher.path)
    assert.are.equal("/sample", r.data.dir)
    assert.are.same({ { key = "teacher.path", env = "DQBART_TEACHER", hint = "download it" } }, info.missing)
    r, info = resolve(tbl, { sets = { "teacher.path=/t" } })
    assert.are.equal("/t", r.teacher.path)
    assert.are.same({}, info.missing)
  end)

  it("append with .. (placeholder and string)", function()
    local r = resolve({ teacher = { path = recipe.env("HOME_X") .. "/teacher" } },
      { getenv = env({ HOME_X = "/h" }) })
    assert.are.equal("/h/teacher", r.teacher.path)
    r = resolve({ teacher = { path = "/base/" .. recipe.env("NAME_X") } }, { getenv = env({ NAME_X = "t" }) })
    assert.are.equal("/base/t", r.teacher.path)
  end)

  it("a run refuses to start with what to download", function()
    local run = require("dqbart.run")
    local r, info = resolve({ teacher = { path = recipe.teacher_env("cnndm") }, data = { dir = recipe.data_env("cnndm") } })
    local problems = table.concat(run.check_inputs(r, info), "\n")
    assert.matches("DQBART_CNNDM_DIR", problems)
    assert.matches("load_dataset%('cnn_dailymail', '3%.0%.0'%)", problems)
    assert.matches("ainize/bart%-base%-cnn", problems)
  end)
end)

describe("layer maps", function()
  it("use maximal spacing for counts, keep explicit lists and pair the losses alike", function()
    local r = resolve(with({ student = { encoder_layers = 3, decoder_layers = { 0, 5 } } }))
    local m = recipe.layer_maps(r, 6, 6)
    assert.are.same({ 0, 2, 5 }, m.encoder_layers)
    assert.are.same({ 0, 5 }, m.decoder_layers)
    assert.are.same({ 0, 2, 5 }, m.encoder_map)
    local twelve = recipe.layer_maps(resolve(with({ student = { encoder_layers = 6, decoder_layers = 1 } })), 12, 12)
    assert.are.same({ 0, 2, 4, 7, 9, 11 }, twelve.encoder_layers)
    assert.are.same({ 11 }, twelve.decoder_layers)
    local all = recipe.layer_maps(resolve(T), 6, 3)
    assert.are.same({ 0, 1, 2 }, all.decoder_layers)
    assert.matches("teacher layer 6", err_of(recipe.layer_maps, resolve(with({ student = { encoder_layers = { 6 } } })), 6, 6))
  end)
end)

describe("the recipes in recipes/", function()
  local HERE = debug.getinfo(1, "S").source:match("^@(.*)/spec/[^/]*$") or "."
  local fixtures = HERE .. "/spec/fixtures"
  local env = {
    DQBART_TEACHER = fixtures .. "/bart/bart", DQBART_XSUM_DIR = fixtures .. "/debsum",
    DQBART_CNNDM_DIR = fixtures .. "/debsum", DQBART_ELI5_DIR = fixtures .. "/debsum",
    DQBART_WMT_ENRO_DIR = fixtures .. "/debsum",
  }
  local recipe_files = {}
  for _, name in ipairs(files.list_dir(HERE .. "/recipes")) do
    if name:match("%.lua$") and files.read(HERE .. "/recipes/" .. name):find("dq.recipe", 1, true) then
      recipe_files[#recipe_files + 1] = name
    end
  end

  it("include the DQ-BART configurations, the baselines and the demo", function()
    for _, name in ipairs({ "xsum_w8.lua", "xsum_w2.lua", "xsum_w2_e6d3.lua", "xsum_w2_e6d1.lua", "cnndm_w2.lua",
      "eli5_w2.lua", "wmt_enro_mbart_w8.lua", "quant_only.lua", "distill_only.lua", "debsum_demo.lua" }) do
      local found = false
      for _, f in ipairs(recipe_files) do found = found or f == name end
      assert.is_true(found, name)
    end
  end)

  for _, name in ipairs(recipe_files) do
    it(name .. " resolves with its inputs present", function()
      local path = HERE .. "/recipes/" .. name
      local r, info = recipe.load(path, { getenv = function(k) return env[k] end })
      assert.are.same({}, info.missing)
      assert.are.same({}, require("dqbart.run").check_inputs(r, info))
      assert.is_truthy(r.teacher.path or r.teacher.train)
    end)
  end

  it("say which settings they are", function()
    local function load(name)
      return recipe.load(HERE .. "/recipes/" .. name, { getenv = function(k) return env[k] end })
    end
    assert.are.equal("8-8-8", load("xsum_w8.lua").quant.bits)
    local e6d3 = load("xsum_w2_e6d3.lua")
    assert.are.same({ "2-2-8", 6, 3 }, { e6d3.quant.bits, e6d3.student.encoder_layers, e6d3.student.decoder_layers })
    assert.is_false(load("quant_only.lua").distill.enabled)
    assert.are.equal("32-32-32", load("distill_only.lua").quant.bits)
    assert.are.equal("bleu", load("wmt_enro_mbart_w8.lua").eval.metric)
    assert.are.equal(4, load("cnndm_w2.lua").eval.beams)
  end)
end)

describe("dqbart RECIPE", function()
  local HERE = debug.getinfo(1, "S").source:match("^@(.*)/spec/[^/]*$") or "."
  -- the launcher by a path that still holds after `cd HERE`
  local bin = launcher.exe:sub(1, 1) == "/" and launcher.exe or (HERE .. "/" .. launcher.exe)
  local sh = launcher.shell -- a shell command -> stdout and stderr, exit code

  it("--dry-run prints the resolved recipe, maps, shapes, size and steps of the demo on the sample", function()
    local out, code = sh(("cd '%s' && DQBART_DEBSUM_DIR=spec/fixtures/debsum %s recipes/debsum_demo.lua --dry-run")
      :format(HERE, bin))
    assert.are.equal(0, code, out)
    assert.matches('bits = "2%-2%-8"', out)
    assert.matches("student decoder layers copy teacher layers { 2 }", out)
    assert.matches("teacher%s+3%+3%s+128", out)
    assert.matches("student%s+3%+1%s+128", out)
    assert.matches("student%s+2%-2%-8%s+[%d.]+ MiB", out)
    assert.matches("train: [^\n]*spec/fixtures/debsum/train%.jsonl: 2000 examples", out)
    assert.matches("updates per epoch: 63 ", out)
    assert.matches("updates in all: 1000 %(schedule%.max_steps%)", out)
    assert.matches("teacher training: 63 updates per epoch %(batch 32%), 2000 in all", out)
  end)

  it("--set changes the dry run; a bad --set exits 2 naming the key", function()
    local out, code = sh(("cd '%s' && DQBART_DEBSUM_DIR=spec/fixtures/debsum %s recipes/debsum_demo.lua --dry-run "
      .. "--set batch.size=8 --set student.decoder_layers=2 --set teacher.train.max_steps=300"):format(HERE, bin))
    assert.are.equal(0, code, out)
    assert.matches("updates per epoch: 250", out)
    assert.matches("teacher training: 63 updates per epoch %(batch 32%), 300 in all", out)
    assert.matches("student decoder layers copy teacher layers { 0, 2 }", out)
    out, code = sh(("cd '%s' && %s recipes/debsum_demo.lua --dry-run --set batch.sise=8"):format(HERE, bin))
    assert.are.equal(2, code)
    assert.matches("unknown key 'batch%.sise' in %-%-set batch%.sise=8; did you mean 'batch%.size'%?", out)
  end)

  it("without --dry-run says what is missing and how to get it", function()
    local out, code = sh(("cd '%s' && env -u DQBART_TEACHER -u DQBART_XSUM_DIR %s recipes/xsum_w2.lua"):format(HERE, bin))
    assert.are.equal(2, code)
    assert.matches("DQBART_XSUM_DIR", out)
    assert.matches("load_dataset%('EdinburghNLP/xsum'%)", out)
  end)

  it("--schema lists the keys", function()
    local out, code = sh(("cd '%s' && %s recipes/debsum_demo.lua --schema"):format(HERE, bin))
    assert.are.equal(0, code)
    assert.matches("schedule%.warmup_ratio", out)
  end)
end)
