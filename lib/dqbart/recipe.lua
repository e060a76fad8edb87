-- dqbart.recipe (dq.recipe): what a run does, as data. A recipe is a Lua
-- file returning a table, usually through dq.recipe{...}:
--
--   return dq.recipe {
--     task = "xsum",
--     teacher = { path = dq.recipe.env("DQBART_TEACHER", { hint = "..." }) },
--     data = { dir = dq.recipe.env("DQBART_XSUM_DIR", { hint = "..." }) },
--     student = { encoder_layers = 6, decoder_layers = 3 },
--     quant = { bits = "2-2-8" },
--   }
--
-- Every key has a type, a default and a doc string (the schema below;
-- `dqbart RECIPE --schema` or print(dq.recipe.doc()) lists them). Anything
-- a recipe leaves out takes its default, which may depend on other keys
-- (the task picks data fields, metric and generation settings; the distill
-- preset picks the loss weights). An unknown key is an error naming the key
-- and the nearest valid one; a value of the wrong type names the expected
-- type and the value.
--
--   dq.recipe{...}                  mark a table as a recipe (checked when resolved)
--   dq.recipe.env(NAME, { hint = "what to download", default = "..." })
--                                   a value read from the environment when the
--                                   recipe is resolved; `..` appends to it
--   dq.recipe.data_env("xsum"), dq.recipe.teacher_env("xsum")
--                                   $DQBART_XSUM_DIR / $DQBART_TEACHER with what to
--                                   download when unset (xsum, cnndm, eli5, wmt_enro)
--   dq.recipe.here()                the directory of the recipe file calling it
--   dq.recipe.load(path, { sets = { "optim.lr=1e-4", ... } })  -> resolved, info
--   dq.recipe.resolve(tbl, { source =, sets =, getenv = })       -> resolved, info
--   dq.recipe.format(resolved, info)  the resolved recipe as Lua text, schema order
--   dq.recipe.parse_set("schedule.epochs=3") -> "schedule.epochs", 3
--
-- info: source (the file), sources[path] ("recipe", "default", "--set",
-- "$NAME"), missing (a list of { key =, env =, hint = } for values that come
-- from unset environment variables; a run refuses to start with any),
-- env_keys[path] ({ env =, hint = } of every key given by dq.recipe.env).
local suggest = require("dqbart.suggest")

local M = {}

-- ---- types -----------------------------------------------------------------------------------
-- A type: { name = "a number", check = function(v) -> ok, detail }, parse =
-- function(text) -> value | nil, why } (for --set).

local T = {}
M.types = T

local function is_int(v) return type(v) == "number" and v % 1 == 0 and v == v and v ~= math.huge and v ~= -math.huge end

local function describe_value(v)
  if type(v) == "string" then return ("the string %q"):format(v) end
  if type(v) == "table" then return "a table" end
  if v == nil then return "nil" end
  return ("%s %s"):format(type(v), tostring(v))
end
M.describe_value = describe_value

local function parse_number(text)
  local v = tonumber(text)
  if v == nil then return nil, ("'%s' is not a number"):format(text) end
  return v
end

function T.number(o)
  o = o or {}
  local name = "a number"
  if o.min and o.max then name = ("a number from %s to %s"):format(o.min, o.max)
  elseif o.above then name = ("a number above %s"):format(o.above)
  elseif o.min then name = ("a number >= %s"):format(o.min) end
  return {
    name = name,
    check = function(v)
      if type(v) ~= "number" or v ~= v then return false end
      if o.min and v < o.min then return false end
      if o.max and v > o.max then return false end
      if o.above and not (v > o.above) then return false end
      return true
    end,
    parse = parse_number,
  }
end

function T.integer(o)
  o = o or {}
  local name = "an integer"
  if o.min == 1 then name = "a positive integer" elseif o.min == 0 then name = "a non-negative integer" end
  if o.max then name = ("an integer from %d to %d"):format(o.min or 0, o.max) end
  return {
    name = name,
    check = function(v)
      return is_int(v) and (not o.min or v >= o.min) and (not o.max or v <= o.max)
    end,
    parse = parse_number,
  }
end

T.string = {
  name = "a string",
  check = function(v) return type(v) == "string" end,
  parse = function(text) return text end,
}

T.boolean = {
  name = "a boolean",
  check = function(v) return type(v) == "boolean" end,
  parse = function(text)
    local t = text:lower()
    if t == "true" or t == "yes" or t == "1" or t == "on" then return true end
    if t == "false" or t == "no" or t == "0" or t == "off" then return false end
    return nil, ("'%s' is not a boolean (true/false)"):format(text)
  end,
}

T.func = {
  name = "a function",
  check = function(v) return type(v) == "function" end,
  parse = function() return nil, "a function cannot be given on the command line" end,
}

function T.enum(values)
  local quoted = {}
  for i, v in ipairs(values) do quoted[i] = ("'%s'"):format(v) end
  return {
    name = "one of " .. table.concat(quoted, ", "),
    values = values,
    check = function(v)
      for _, x in ipairs(values) do if v == x then return true end end
      return false
    end,
    parse = function(text) return text end,
  }
end

-- A list (Lua sequence) of items of one type; n: exact length.
function T.list(item, o)
  o = o or {}
  local name = o.n and ("a list of %d %s"):format(o.n, o.plural or "values") or ("a list of " .. (o.plural or "values"))
  return {
    name = name,
    is_list = true,
    check = function(v)
      if type(v) ~= "table" then return false end
      local count = 0
      for _ in pairs(v) do count = count + 1 end
      if count ~= #v then return false, "it has keys that are not list positions" end
      if o.n and #v ~= o.n then return false, ("it has %d entries"):format(#v) end
      if o.min_length and #v < o.min_length then return false, "it is empty" end
      for i, x in ipairs(v) do
        if not item.check(x) then return false, ("entry %d is %s, not %s"):format(i, describe_value(x), item.name) end
      end
      return true
    end,
    parse = function(text)
      local out = {}
      if text == "" then return out end
      if text:sub(-1) ~= "," then text = text .. "," end
      for part in text:gmatch("([^,]*),") do
        local v, why = item.parse(part:match("^%s*(.-)%s*$"))
        if v == nil then return nil, why end
        out[#out + 1] = v
      end
      return out
    end,
  }
end

-- A table with string keys and values of one type.
function T.map(value, o)
  o = o or {}
  return {
    name = o.name or ("a table of name = " .. value.name),
    map_value = value,
    check = function(v)
      if type(v) ~= "table" then return false end
      for k, x in pairs(v) do
        if type(k) ~= "string" then return false, ("its key %s is not a string"):format(tostring(k)) end
        local ok, why = value.check(x)
        if not ok then return false, ("[%q] is %s, not %s%s"):format(k, describe_value(x), value.name,
          why and (" (" .. why .. ")") or "") end
      end
      return true
    end,
    parse = function() return nil, "a table cannot be given whole on the command line; set its entries" end,
  }
end

-- Any of several types (tried in order for --set: a comma makes a list).
function T.either(...)
  local alts = { ... }
  local names = {}
  for i, a in ipairs(alts) do names[i] = a.name end
  return {
    name = table.concat(names, " or "),
    check = function(v)
      local why
      for _, a in ipairs(alts) do
        local ok, detail = a.check(v)
        if ok then return true end
        -- The alternative of the value's own kind explains best.
        if (type(v) == "table") == (a.is_list or false) then why = why or detail end
      end
      return false, why
    end,
    -- --set text: with a comma a list is meant ("0,2,5"; "5," is a list of one).
    parse = function(text)
      local want_list = text:find(",", 1, true) ~= nil
      local first_why
      for pass = 1, 2 do
        for _, a in ipairs(alts) do
          if ((a.is_list or false) == want_list) == (pass == 1) then
            local v, why = a.parse(text)
            if v ~= nil and a.check(v) then return v end
            first_why = first_why or why
          end
        end
      end
      return nil, first_why or ("'%s' is not %s"):format(text, table.concat(names, " or "))
    end,
  }
end

-- A record: a table with known keys (used inside maps, e.g. quant overrides).
function T.record(fields, name)
  local keys = {}
  for k in pairs(fields) do keys[#keys + 1] = k end
  table.sort(keys)
  return {
    name = name or ("a table with keys " .. table.concat(keys, ", ")),
    fields = fields,
    check = function(v)
      if type(v) ~= "table" then return false end
      for k, x in pairs(v) do
        local f = fields[k]
        if not f then
          return false, ("unknown key '%s'; did you mean '%s'?"):format(tostring(k), suggest.nearest(k, keys))
        end
        if not f.check(x) then return false, ("%s is %s, not %s"):format(k, describe_value(x), f.name) end
      end
      return true
    end,
    parse = function() return nil, "a table cannot be given whole on the command line; set its entries" end,
  }
end

-- ---- environment placeholders --------------------------------------------------------------

local Env = {}
Env.__index = Env
Env.__concat = function(a, b)
  if getmetatable(a) == Env then
    return setmetatable({ name = a.name, hint = a.hint, default = a.default, suffix = a.suffix .. tostring(b) }, Env)
  end
  return setmetatable({ name = b.name, hint = b.hint, default = b.default, prefix = tostring(a) .. (b.prefix or ""),
    suffix = b.suffix }, Env)
end
Env.__tostring = function(e) return ("$%s%s"):format(e.name, e.suffix) end

-- A value from the environment variable `name` when the recipe is
-- resolved (--set of the same key wins). opts: hint (what to download and
-- where to put it: shown when the variable is unset), default (used when
-- unset; may be nil: the key is then missing).
function M.env(name, opts)
  if type(name) ~= "string" or not name:match("^[%a_][%w_]*$") then
    error("dq.recipe.env: expected an environment variable name, got " .. tostring(name), 2)
  end
  opts = opts or {}
  return setmetatable({ name = name, hint = opts.hint, default = opts.default, suffix = "" }, Env)
end

local function is_env(v) return getmetatable(v) == Env end
M.is_env = is_env

-- ---- the public datasets and teachers of the paper ----------------------------------------------
-- dq.recipe.data_env("xsum") and dq.recipe.teacher_env("xsum"): environment
-- values with the instructions a run prints when they are unset.

local function export(name, config, splits, fields)
  local parts = {}
  for _, s in ipairs(splits) do parts[#parts + 1] = ("('%s', '%s')"):format(s[1], s[2]) end
  return ("put train.jsonl, valid.jsonl and test.jsonl (fields %s) in a directory DIR, e.g. with\n"
    .. "python -c \"from datasets import load_dataset; d = load_dataset('%s'%s); "
    .. "[d[s].to_json(f'DIR/{n}.jsonl') for s, n in [%s]]\""):format(fields, name,
    config and (", '" .. config .. "'") or "", table.concat(parts, ", "))
end

local HF_SPLITS = { { "train", "train" }, { "validation", "valid" }, { "test", "test" } }

M.DATASETS = {
  xsum = { env = "DQBART_XSUM_DIR", hint = export("EdinburghNLP/xsum", nil, HF_SPLITS, "document, summary") },
  cnndm = { env = "DQBART_CNNDM_DIR", hint = export("cnn_dailymail", "3.0.0", HF_SPLITS, "article, highlights") },
  eli5 = { env = "DQBART_ELI5_DIR", hint = export("eli5", nil, { { "train_eli5", "train" },
    { "validation_eli5", "valid" }, { "test_eli5", "test" } }, "title, answers.text") },
  wmt_enro = { env = "DQBART_WMT_ENRO_DIR", hint = export("wmt16", "ro-en", HF_SPLITS, "translation.en, translation.ro") },
}

local function save_teacher(model)
  return ("python -c \"from transformers import AutoModelForSeq2SeqLM as M, AutoTokenizer as T; n = '%s'; "
    .. "M.from_pretrained(n).save_pretrained('DIR'); T.from_pretrained(n).save_pretrained('DIR')\""):format(model)
end

M.TEACHERS = {
  xsum = "a facebook/bart-base fine-tuned on XSUM (the paper's teacher), saved as a Hugging Face directory DIR "
    .. "(config.json, model.safetensors, vocab.json, merges.txt): fine-tune one with transformers' "
    .. "examples/pytorch/summarization/run_summarization.py --model_name_or_path facebook/bart-base "
    .. "--dataset_name EdinburghNLP/xsum --output_dir DIR, or save a hub checkpoint of one with\n"
    .. save_teacher("<hub name of a bart-base XSUM model>"),
  cnndm = "ainize/bart-base-cnn (the reference's CNN/DailyMail teacher) as a Hugging Face directory DIR:\n"
    .. save_teacher("ainize/bart-base-cnn"),
  eli5 = "a facebook/bart-base fine-tuned on ELI5 as a Hugging Face directory DIR (run_summarization.py "
    .. "--model_name_or_path facebook/bart-base --text_column title --summary_column answers.text ...)",
  wmt_enro = "facebook/mbart-large-en-ro as a Hugging Face directory DIR:\n" .. save_teacher("facebook/mbart-large-en-ro"),
}

-- data.dir from $DQBART_<DATASET>_DIR.
function M.data_env(name)
  local d = M.DATASETS[name]
  if not d then error(("dq.recipe.data_env: unknown dataset '%s' (xsum, cnndm, eli5, wmt_enro)"):format(tostring(name)), 2) end
  return M.env(d.env, { hint = d.hint })
end

-- teacher.path from $DQBART_TEACHER, with what to download for `name`.
function M.teacher_env(name)
  local hint = M.TEACHERS[name]
  if not hint then error(("dq.recipe.teacher_env: unknown teacher '%s' (xsum, cnndm, eli5, wmt_enro)"):format(tostring(name)), 2) end
  return M.env("DQBART_TEACHER", { hint = "the teacher: " .. hint })
end

-- The directory of the recipe file that calls this (for paths next to it).
function M.here(level)
  local src = debug.getinfo((level or 1) + 1, "S").source
  local path = src:match("^@(.*)$") or "."
  return path:match("^(.*)/[^/]*$") or "."
end

-- ---- the schema -------------------------------------------------------------------------------
-- A node: a field { name, type, default, doc, aliases } or a section
-- { name, doc, fields = {...}, optional } whose fields are in print order.
-- A default is a value or function(r) of the recipe resolved so far (keys
-- earlier in schema order are final).

local function field(name, ty, default, doc, extra)
  local f = { kind = "field", name = name, type = ty, default = default, doc = doc }
  for k, v in pairs(extra or {}) do f[k] = v end
  return f
end

local function section(name, doc, fields, extra)
  local s = { kind = "section", name = name, doc = doc, fields = fields, by_name = {} }
  for _, f in ipairs(fields) do s.by_name[f.name] = f end
  for k, v in pairs(extra or {}) do s[k] = v end
  return s
end

-- Per task: data fields, selection metric and generation settings
-- (DQBART.md section 5; XSUM's generation settings are the general default).
local XSUM_GEN = { beams = 6, length_penalty = 1.0, max_length = 62, min_length = 11, no_repeat_ngram_size = 3 }
local CNNDM_GEN = { beams = 4, length_penalty = 2.0, max_length = 142, min_length = 56, no_repeat_ngram_size = 3 }
-- facebook/mbart-large-en-ro's configuration (the reference gives none for MT).
local MT_GEN = { beams = 5, length_penalty = 1.0, max_length = 200, min_length = 0, no_repeat_ngram_size = 0 }

M.TASKS = {
  summarization = { metric = "rougeLsum", source = "document", target = "summary", gen = XSUM_GEN },
  xsum = { metric = "rougeLsum", source = "document", target = "summary", gen = XSUM_GEN },
  cnndm = { metric = "rougeLsum", source = "article", target = "highlights", gen = CNNDM_GEN },
  eli5 = { metric = "rougeLsum", source = "title", target = "answers.text.0", gen = XSUM_GEN },
  translation = { metric = "bleu", gen = MT_GEN },
  wmt_enro = { metric = "bleu", source = "translation.en", target = "translation.ro", gen = MT_GEN },
}
local TASK_NAMES = { "summarization", "xsum", "cnndm", "eli5", "translation", "wmt_enro" }

local function task_of(r) return M.TASKS[r.task] end
local function gen_default(key) return function(r) return task_of(r).gen[key] end end

-- The loss terms (lib/dqbart/dq.lua): those of DQBART.md section 4 and kl,
-- beyond the reference (off in the reference's two presets).
M.TERMS = require("dqbart.dq").TERMS
M.PRESETS = {
  default = { task = 1, logits = 1, hid = 1, kl = 0 },
  weighted = { task = 1, logits = 0.8, hid = 3, kl = 0 },
  kl = { task = 1, logits = 0, hid = 0, kl = 1 }, -- beyond the reference
}

local function weight_default(term)
  return function(r)
    local p = M.PRESETS[r.distill.preset]
    if term == "task" or term == "logits" or term == "kl" then return p[term] end
    return p.hid
  end
end

local layers_type = T.either(T.integer({ min = 1 }), T.list(T.integer({ min = 0 }), { plural = "layer indices",
  min_length = 1 }))
local path_type = T.string
local METHODS = { "auto", "sym", "twn", "bwn", "asym" }
local GRANULARITIES = { "tensor", "row", "head" }

local function teacher_dir(r)
  if r.teacher.path then return r.teacher.path end
  if r.teacher.train then return r.teacher.train.dir end
  return nil
end

local SCHEMA = section("", "a DQ-BART run", {
  field("name", T.string, function(r, ctx) return ctx.default_name end,
    "run name (logs; the default output directory)", { default_doc = "the recipe file's name" }),
  field("task", T.enum(TASK_NAMES), "summarization",
    "what the data is: picks the data fields, the selection metric and the generation defaults "
    .. "(xsum, cnndm, eli5, wmt_enro; summarization and translation are generic: XSUM's generation "
    .. "settings and ROUGE, or mBART en-ro's and BLEU)", { aliases = { "dataset", "dataset_name" } }),
  field("seed", T.integer({ min = 0 }), 28, "seed of initialization, dropout and shuffling (the reference's 28)"),
  field("device", T.string, "auto",
    "'auto' (the first GPU when there is one, else the CPU), 'cpu', 'cuda' or 'cuda:N'"),
  field("precision", T.enum({ "auto", "f32", "bf16" }), "auto",
    "activations: 'auto' is bf16 on CUDA (f32 master weights and optimizer state) and f32 on the CPU "
    .. "(the reference trains in fp16 mixed precision)", { aliases = { "dtype", "fp16", "mixed_precision" } }),
  field("threads", T.integer({ min = 0 }), 0, "CPU threads (0: the engine's default)"),
  field("output_dir", path_type, function(r) return "runs/" .. r.name end,
    "where checkpoints, logs and results go", { default_doc = "runs/<name>", aliases = { "output", "out_dir" } }),
  field("resume", T.either(T.boolean, T.string), false,
    "continue from the checkpoint in <output_dir>/checkpoint (true; also `dqbart RECIPE --resume`) or in the "
    .. "directory given: the losses repeat those of an uninterrupted run (a run without a checkpoint starts over)",
    { aliases = { "resume_from_checkpoint" } }),
  field("checkpoint_every_steps", T.integer({ min = 1 }), nil,
    "also write the resumable checkpoint every N updates (it is written after each validation, at the end and "
    .. "on Ctrl-C anyway)", { default_doc = "no", aliases = { "save_steps", "save_every_steps" } }),

  section("data", "training, validation and test data (JSON Lines or TSV; dq.data's options)", {
    field("dir", path_type, nil, "directory of the data files; relative train/valid/test paths are inside it",
      { aliases = { "data_dir", "path" } }),
    field("train", path_type, "train.jsonl", "training file", { aliases = { "train_file" } }),
    field("valid", path_type, "valid.jsonl", "validation file (selection of the best checkpoint)",
      { aliases = { "validation", "validation_file", "dev" } }),
    field("test", path_type, "test.jsonl", "test file (scored once with the best checkpoint)",
      { aliases = { "test_file" } }),
    field("format", T.enum({ "jsonl", "tsv" }), nil, "file format", { default_doc = "from the file extension" }),
    field("source", T.string, function(r) return task_of(r).source end,
      "source field: a JSON key, dots reach into nested objects ('translation.en'), numbers into arrays "
      .. "('answers.text.0'); TSV: a column number or header name",
      { default_doc = "per task", aliases = { "text_column", "source_field" } }),
    field("target", T.string, function(r) return task_of(r).target end, "target field, as source",
      { default_doc = "per task", aliases = { "summary_column", "target_field" } }),
    field("header", T.boolean, nil, "TSV: whether the first line names the columns",
      { default_doc = "true when a column is given by name" }),
    field("max_source_length", T.integer({ min = 1 }), 1024, "source truncation in tokens",
      { aliases = { "max_source_len", "max_input_length" } }),
    field("max_target_length", T.integer({ min = 1 }), 128, "target truncation in tokens",
      { aliases = { "max_target_len" } }),
    field("limit_train", T.integer({ min = 1 }), nil, "use only the first N training examples",
      { default_doc = "all", aliases = { "max_train_samples", "limit" } }),
    field("limit_valid", T.integer({ min = 1 }), nil, "use only the first N validation examples",
      { default_doc = "all", aliases = { "max_eval_samples" } }),
    field("limit_test", T.integer({ min = 1 }), nil, "use only the first N test examples",
      { default_doc = "all", aliases = { "max_predict_samples" } }),
    field("tokenizer", path_type, teacher_dir, "tokenizer directory",
      { default_doc = "the teacher's directory (a trained teacher's BPE)", late = true }),
    field("source_lang", T.string, nil, "mBART source language code (en_XX)", { aliases = { "src_lang" } }),
    field("target_lang", T.string, nil, "mBART target language code (ro_RO)", { aliases = { "tgt_lang" } }),
    field("cache", T.boolean, true, "keep tokenized data in a cache file next to the data"),
    field("cache_dir", path_type, nil, "put the token caches there instead"),
  }),

  section("teacher", "the frozen full-precision teacher: a checkpoint, or a spec to train one first", {
    field("path", path_type, nil,
      "a Hugging Face checkpoint directory of a fine-tuned BART or mBART (config.json, model.safetensors, "
      .. "tokenizer files)", { aliases = { "dir", "model_name_or_path", "teacher_model" } }),
    section("train", "train a small BART teacher from scratch first (with a BPE vocabulary trained on the "
      .. "training data) and distill from it", {
      field("dir", path_type, function(r) return r.output_dir .. "/teacher" end,
        "where the trained teacher (and its tokenizer) is written; an existing complete one is reused",
        { default_doc = "<output_dir>/teacher" }),
      field("vocab_size", T.integer({ min = 16 }), 8000, "BPE vocabulary size, special tokens included"),
      field("min_frequency", T.integer({ min = 1 }), 2, "BPE: a pair must occur this often to merge"),
      field("d_model", T.integer({ min = 8 }), 256, "hidden size", { aliases = { "hidden_size", "dim" } }),
      field("encoder_layers", T.integer({ min = 1 }), 3, "encoder layers"),
      field("decoder_layers", T.integer({ min = 1 }), 3, "decoder layers"),
      field("heads", T.integer({ min = 1 }), 4, "attention heads (encoder and decoder)",
        { aliases = { "attention_heads", "num_heads" } }),
      field("ffn_dim", T.integer({ min = 1 }), 1024, "feed-forward inner size", { aliases = { "ffn", "ffn_size" } }),
      field("max_positions", T.integer({ min = 1 }),
        function(r) return math.max(r.data.max_source_length, r.data.max_target_length) end,
        "learned positions (max_position_embeddings)", { default_doc = "the longer of the data's max lengths" }),
      field("init_std", T.number({ above = 0 }), function(r) return 1 / math.sqrt(r.teacher.train.d_model) end,
        "standard deviation of the initial weights (config.json init_std; transformers' 0.02 suits d_model 768 "
        .. "and up, but leaves a small model's cross-attention too weak to learn from in a short run)",
        { default_doc = "1 / sqrt(d_model)" }),
      field("dropout", T.number({ min = 0, max = 1 }), 0.1, "dropout"),
      field("attention_dropout", T.number({ min = 0, max = 1 }), 0.0, "attention dropout"),
      field("activation_dropout", T.number({ min = 0, max = 1 }), 0.0, "activation dropout"),
      field("epochs", T.number({ above = 0 }), 10, "training epochs"),
      field("max_steps", T.integer({ min = 1 }), nil, "total updates; replaces epochs",
        { default_doc = "epochs x updates per epoch", aliases = { "steps" } }),
      field("lr", T.number({ above = 0 }), 5e-4, "peak learning rate (linear warmup and decay)",
        { aliases = { "learning_rate" } }),
      field("warmup_ratio", T.number({ min = 0, max = 1 }), 0.05, "warmup share of the updates"),
      field("batch_size", T.integer({ min = 1 }), 32, "examples per update"),
      field("weight_decay", T.number({ min = 0 }), 0.01, "AdamW weight decay"),
      field("label_smoothing", T.number({ min = 0, max = 1 }), 0.1, "label smoothing of the cross-entropy"),
      field("max_grad_norm", T.number({ min = 0 }), 1.0, "gradient clipping (0: none)"),
    }, { optional = true }),
  }),

  section("student", "the student's layers, copied from the teacher (DQBART.md section 3)", {
    field("encoder_layers", layers_type, nil,
      "a count (teacher layers by maximal spacing: first and last kept, the rest spread evenly; one layer is "
      .. "the last) or an explicit list of 0-based teacher layers", { default_doc = "all of the teacher's",
      aliases = { "distill_encoder", "encoder" } }),
    field("decoder_layers", layers_type, nil, "as encoder_layers, for the decoder",
      { default_doc = "all of the teacher's", aliases = { "distill_decoder", "decoder" } }),
  }),

  section("quant", "quantization of the student (DQBART.md section 2)", {
    field("enabled", T.boolean, true, "quantize at all (false: 32-32-32, the distillation-only baseline)"),
    field("bits", T.string, function(r) return r.quant.enabled and "8-8-8" or "32-32-32" end,
      "W-E-A: bits of the layers' linear weights, the token embedding and the activations (2..8, 16, or 32 = "
      .. "full precision)", { default_doc = "8-8-8", aliases = { "wea", "weight_bits" } }),
    field("clip", T.number({ above = 0 }), 2.5, "clip inputs of every quantizer to [-clip, clip]",
      { aliases = { "clip_val" } }),
    field("weight_method", T.enum(METHODS), "auto", "quantizer of linear weights ('auto': TWN at 2 bits, else "
      .. "symmetric uniform)"),
    field("weight_granularity", T.enum(GRANULARITIES), "tensor", "statistics of weight quantizers"),
    field("embedding_method", T.enum(METHODS), "auto", "quantizer of the token embedding"),
    field("embedding_granularity", T.enum(GRANULARITIES), "row", "statistics of the embedding quantizer"),
    field("activation_method", T.enum(METHODS), "sym", "quantizer of activations (linear inputs, attention)"),
    field("activation_granularity", T.enum(GRANULARITIES), "tensor", "statistics of activation quantizers"),
    field("overrides", T.map(T.record({
      bits = T.integer({ min = 1, max = 32 }), method = T.enum(METHODS), granularity = T.enum(GRANULARITIES),
      clip = T.number({ above = 0 }), enabled = T.boolean,
    }, "a table of bits, method, granularity, clip, enabled")), {},
      "per parameter: a parameter-name pattern ('*' matches any text, e.g. 'model.decoder.layers.*.fc2.weight') "
      .. "mapped to the quantizer settings that replace its role's"),
  }),

  section("distill", "the loss (DQBART.md section 4)", {
    field("enabled", T.boolean, true,
      "distill from the teacher (false: the task loss only and no teacher forward, the quantization-only "
      .. "baseline; the student still starts from teacher weights)"),
    field("preset", T.enum({ "default", "weighted", "kl" }), "default",
      "loss weights: 'default' 1/1/1, 'weighted' the reference's --weighted 1/0.8/3 (task/logits/intermediate); "
      .. "'kl' (beyond the reference) the task loss and the kl term, 1/1, nothing else"),
    section("weights", "weight of each term (0 turns it off); total = sum of weight * term", {
      field("task", T.number({ min = 0 }), weight_default("task"), "token cross-entropy on the labels",
        { default_doc = "per preset" }),
      field("logits", T.number({ min = 0 }), weight_default("logits"), "MSE of the logits",
        { default_doc = "per preset", aliases = { "pred", "pred_distill" } }),
      field("kl", T.number({ min = 0 }), weight_default("kl"),
        "beyond the reference: T^2 KL(teacher || student) of the output distributions at distill.temperature "
        .. "(mean over label tokens)", { default_doc = "per preset: 1 in 'kl', else 0" }),
      field("enc_att", T.number({ min = 0 }), weight_default("enc_att"), "MSE of encoder attention maps",
        { default_doc = "per preset" }),
      field("dec_att", T.number({ min = 0 }), weight_default("dec_att"), "MSE of decoder self-attention maps",
        { default_doc = "per preset" }),
      field("crs_att", T.number({ min = 0 }), weight_default("crs_att"), "MSE of cross-attention maps",
        { default_doc = "per preset", aliases = { "cross_att" } }),
      field("enc_hid", T.number({ min = 0 }), weight_default("enc_hid"), "MSE of encoder hidden states",
        { default_doc = "per preset" }),
      field("dec_hid", T.number({ min = 0 }), weight_default("dec_hid"), "MSE of decoder hidden states",
        { default_doc = "per preset" }),
      field("enc_hid_last", T.number({ min = 0 }), weight_default("enc_hid_last"),
        "the reference's per-sample MSE of the last encoder hidden state, summed over the batch",
        { default_doc = "per preset" }),
    }),
    field("temperature", T.number({ above = 0 }), 2, "softmax temperature of the kl term"),
    field("encoder_map", T.list(T.integer({ min = 0 }), { plural = "layer indices" }), nil,
      "teacher encoder layer paired with each student layer by the intermediate losses",
      { default_doc = "the student's encoder layers" }),
    field("decoder_map", T.list(T.integer({ min = 0 }), { plural = "layer indices" }), nil,
      "as encoder_map, for the decoder", { default_doc = "the student's decoder layers" }),
    field("extra_losses", T.map(T.func, { name = "a table of name = function(ctx)" }), {},
      "more loss terms: name = function(ctx) that adds its gradient through ctx and returns its value "
      .. "(a number or 0-d tensor) for the log (see lib/dqbart/dq.lua)"),
  }),

  section("optim", "the optimizer of the student's latent (full-precision) weights", {
    field("name", T.enum({ "adamw" }), "adamw", "optimizer", { aliases = { "optimizer" } }),
    field("variant", T.enum({ "transformers", "torch" }), "transformers",
      "'transformers': transformers 4.x AdamW, the reference's (eps added before the bias correction, decay "
      .. "after the update); 'torch': torch.optim.AdamW"),
    field("lr", T.number({ above = 0 }), 3e-5, "peak learning rate", { aliases = { "learning_rate" } }),
    field("betas", T.list(T.number({ min = 0, max = 1 }), { n = 2, plural = "numbers" }), { 0.9, 0.999 },
      "Adam's beta1, beta2", { aliases = { "beta", "adam_betas" } }),
    field("eps", T.number({ min = 0 }), 1e-6, "Adam's epsilon (transformers.AdamW's default)",
      { aliases = { "epsilon", "adam_epsilon" } }),
    field("weight_decay", T.number({ min = 0 }), 0, "decoupled weight decay"),
    field("no_decay", T.list(T.string, { plural = "strings" }), { "bias", "LayerNorm.weight" },
      "parameters whose names contain one of these get no weight decay (the reference's list; in BART only "
      .. "biases match)"),
    field("max_grad_norm", T.number({ min = 0 }), 0,
      "clip the global gradient norm to this (0: no clipping, as the reference; transformers' Trainer uses 1)",
      { aliases = { "clip_grad_norm", "max_norm", "gradient_clipping", "grad_clip" } }),
    field("skip_nonfinite", T.boolean, true,
      "skip an update whose gradient norm is NaN or inf, on the device (as the reference's fp16 grad scaler)"),
  }),

  section("schedule", "updates and the learning-rate schedule", {
    field("kind", T.enum({ "linear", "cosine", "constant" }), "linear",
      "after warmup: linear decay to 0, half a cosine, or constant", { aliases = { "lr_scheduler_type", "scheduler",
      "type" } }),
    field("epochs", T.number({ above = 0 }), 20, "training epochs", { aliases = { "num_train_epochs", "num_epochs" } }),
    field("max_steps", T.integer({ min = 1 }), nil, "total updates; replaces epochs",
      { default_doc = "epochs x updates per epoch", aliases = { "max_train_steps", "steps" } }),
    field("warmup_ratio", T.number({ min = 0, max = 1 }), 0.05, "linear warmup over this share of the updates",
      { aliases = { "warmup" } }),
    field("warmup_steps", T.integer({ min = 0 }), nil, "warmup updates; replaces warmup_ratio",
      { default_doc = "from warmup_ratio" }),
    field("warmup_rounding", T.enum({ "floor", "ceil" }), "floor",
      "warmup updates from the ratio: 'floor' as the reference, 'ceil' as transformers' Trainer"),
    field("num_cycles", T.number({ min = 0 }), 0.5, "cosine: waves over the decay (0.5: to zero once)"),
  }),

  section("batch", "batching (the reference: 8 examples x 2 accumulated = 16 per update)", {
    field("size", T.integer({ min = 1 }), 8, "examples per batch (a cap when max_tokens is set)",
      { aliases = { "batch_size", "per_device_train_batch_size", "train_batch_size" } }),
    field("accumulation", T.integer({ min = 1 }), 2, "batches per update",
      { aliases = { "gradient_accumulation_steps", "grad_accum", "accumulate" } }),
    field("max_tokens", T.integer({ min = 1 }), nil,
      "token budget per batch counting padding (batch x longest source, and target, stay within it)",
      { aliases = { "tokens", "token_budget" } }),
    field("eval_size", T.integer({ min = 1 }), 4, "examples per generation batch",
      { aliases = { "eval_batch_size", "per_device_eval_batch_size" } }),
    field("shuffle", T.boolean, true, "shuffle each epoch"),
    field("bucket", T.boolean, true,
      "sort by length within large chunks before batching (less padding; the reference does not)"),
    field("pad_multiple", T.integer({ min = 1 }), nil, "pad lengths to a multiple (the reference: 8 in fp16)"),
  }),

  section("eval", "validation, model selection and generation (DQBART.md section 5)", {
    field("every_steps", T.integer({ min = 1 }), nil, "validate every N updates", { default_doc = "no",
      aliases = { "eval_steps", "steps" } }),
    field("each_epoch", T.boolean, function(r) return r.eval.every_steps == nil end, "validate after each epoch",
      { default_doc = "true unless every_steps is set" }),
    field("metric", T.enum({ "rougeLsum", "rougeL", "rouge1", "rouge2", "bleu", "loss" }),
      function(r) return task_of(r).metric end,
      "selection metric ('loss': validation loss, lower is better; the others higher)",
      { default_doc = "rougeLsum; bleu for translation", aliases = { "metric_for_best_model" } }),
    field("beams", T.integer({ min = 1 }), gen_default("beams"), "beam size", { default_doc = "per task",
      aliases = { "num_beams" } }),
    field("length_penalty", T.number(), gen_default("length_penalty"), "beam length penalty",
      { default_doc = "per task" }),
    field("max_length", T.integer({ min = 1 }), gen_default("max_length"), "longest output in tokens",
      { default_doc = "per task", aliases = { "max_gen_length", "generation_max_length" } }),
    field("min_length", T.integer({ min = 0 }), gen_default("min_length"), "shortest output in tokens",
      { default_doc = "per task" }),
    field("no_repeat_ngram_size", T.integer({ min = 0 }), gen_default("no_repeat_ngram_size"),
      "forbid repeating n-grams of this size (0: off)", { default_doc = "per task" }),
    field("early_stopping", T.boolean, true, "beam search stops when every beam has finished"),
    field("limit", T.integer({ min = 1 }), nil, "validate on the first N examples only", { default_doc = "all" }),
    field("test", T.boolean, true, "score the test set with the best checkpoint at the end",
      { aliases = { "do_test" } }),
    field("save", T.enum({ "best", "last", "none" }), "best", "which checkpoint to keep in output_dir"),
  }),

  section("log", "progress output", {
    field("every_steps", T.integer({ min = 1 }), 20, "log the losses every N updates (the reference's 20)",
      { aliases = { "log_steps", "steps" } }),
    field("file", path_type, function(r) return r.output_dir .. "/train.log" end, "log file (also printed)",
      { default_doc = "<output_dir>/train.log" }),
  }),

  field("step", T.func, nil,
    "replace the whole training step: function(ctx) (copy lib/dqbart/dq.lua's step and change it)",
    { default_doc = "the DQ step" }),
})
M.schema = SCHEMA

-- ---- walking the schema -------------------------------------------------------------------------

local function join(prefix, name)
  if prefix == "" then return name end
  return prefix .. "." .. name
end

-- Every key path of the schema, for suggestions: { path, leaf, node }.
local ALL_PATHS = {}
local function collect(node, prefix)
  for _, f in ipairs(node.fields) do
    local p = join(prefix, f.name)
    ALL_PATHS[#ALL_PATHS + 1] = { path = p, leaf = f.name, node = f, parent = prefix }
    if f.kind == "section" then collect(f, p) end
  end
end
collect(SCHEMA, "")

function M.lookup(path)
  local node = SCHEMA
  for part in path:gmatch("[^.]+") do
    if node.kind ~= "section" then return nil end
    node = node.by_name[part]
    if not node then return nil end
  end
  return node
end

-- The closest valid key to an unknown `path` (whose parent section is
-- `prefix`): an alias wins, then the same leaf name elsewhere, then the
-- smallest edit distance in the same section, then anywhere.
function M.suggest(path, prefix)
  local leaf = path:match("([^.]+)$")
  for _, p in ipairs(ALL_PATHS) do
    for _, a in ipairs(p.node.aliases or {}) do
      if a == leaf and p.parent == prefix then return p.path end
    end
  end
  local alias, alias_depth
  for _, p in ipairs(ALL_PATHS) do
    for _, a in ipairs(p.node.aliases or {}) do
      local depth = select(2, p.path:gsub("%.", ""))
      if a == leaf and (not alias_depth or depth < alias_depth) then alias, alias_depth = p.path, depth end
    end
  end
  if alias then return alias end
  -- The same name in another section: the shallowest (optim.epochs ->
  -- schedule.epochs rather than teacher.train.epochs).
  local same, same_depth
  for _, p in ipairs(ALL_PATHS) do
    if p.leaf == leaf and p.path ~= path then
      local depth = select(2, p.path:gsub("%.", ""))
      if not same_depth or depth < same_depth then same, same_depth = p.path, depth end
    end
  end
  if same then return same end
  local function near(p)
    local d = suggest.distance(leaf, p.leaf)
    for _, a in ipairs(p.node.aliases or {}) do d = math.min(d, suggest.distance(leaf, a)) end
    return d
  end
  local best, best_d
  for _, p in ipairs(ALL_PATHS) do
    if p.parent == prefix then
      local d = near(p)
      if not best_d or d < best_d then best, best_d = p.path, d end
    end
  end
  if best and best_d <= math.max(2, math.floor(#leaf / 3)) then return best end
  local any, any_d
  for _, p in ipairs(ALL_PATHS) do
    local d = near(p)
    if not any_d or d < any_d then any, any_d = p.path, d end
  end
  if any_d and any_d < (best_d or math.huge) then return any end
  return best or any
end

local function where(ctx)
  if ctx.set_text then return ("--set %s"):format(ctx.set_text) end
  return ("recipe %s"):format(ctx.source or "(table)")
end

local function fail(msg) error(msg, 0) end

local function unknown_key(path, prefix, ctx)
  local s = M.suggest(path, prefix)
  fail(("unknown key '%s' in %s%s"):format(path, where(ctx), s and ("; did you mean '%s'?"):format(s) or ""))
end

local function bad_value(path, ty, v, why, ctx)
  fail(("bad value for '%s' in %s: expected %s, got %s%s"):format(path, where(ctx), ty.name, describe_value(v),
    why and (" (" .. why .. ")") or ""))
end

local function check_value(path, f, v, ctx)
  if is_env(v) then
    if f.type ~= T.string then bad_value(path, f.type, v, "an environment value is a string", ctx) end
    return
  end
  local ok, why = f.type.check(v)
  if not ok then bad_value(path, f.type, v, why, ctx) end
end

-- Keys and types of a raw recipe table (no defaults, no cross checks).
local function check_structure(node, tbl, prefix, ctx)
  if type(tbl) ~= "table" then
    fail(("bad value for '%s' in %s: expected a table (section: %s), got %s"):format(prefix, where(ctx), node.doc,
      describe_value(tbl)))
  end
  for k, v in pairs(tbl) do
    local key = type(k) == "string" and k or ("[" .. tostring(k) .. "]")
    local path = join(prefix, key)
    local f = type(k) == "string" and node.by_name[k] or nil
    if not f then unknown_key(path, prefix, ctx) end
    if f.kind == "section" then check_structure(f, v, path, ctx)
    else check_value(path, f, v, ctx) end
  end
end

-- ---- the constructor ------------------------------------------------------------------------------

-- dq.recipe{...}: mark the table as a recipe. Keys and types are checked
-- when it is resolved (dqbart RECIPE, dq.recipe.load), where the file's
-- name is known for the messages (a `return dq.recipe{...}` is a tail call:
-- the recipe's own frame is gone by the time the constructor runs).
local RECIPE_MT = { dq_recipe = true }
local function construct(tbl)
  return setmetatable(tbl, RECIPE_MT)
end

function M.is_recipe(t)
  return type(t) == "table" and getmetatable(t) == RECIPE_MT
end

-- ---- --set ------------------------------------------------------------------------------------------

-- "key.path=value" -> path, value converted by the key's type.
function M.parse_set(text)
  if type(text) ~= "string" then fail("--set expects key.path=value, got " .. tostring(text)) end
  local path, raw = text:match("^%s*([%w_%.]+)%s*=(.*)$")
  if not path then fail(("--set %s: expected key.path=value (e.g. optim.lr=1e-4)"):format(text)) end
  local ctx = { set_text = text }
  local node, prefix = SCHEMA, ""
  for part in path:gmatch("[^.]+") do
    local p = join(prefix, part)
    if node.kind == "section" then
      local nxt = node.by_name[part]
      if not nxt then unknown_key(p, prefix, ctx) end
      node, prefix = nxt, p
    elseif node.kind == "field" and node.type.map_value then
      -- An entry of a map (e.g. quant.overrides.NAME is a table; entries below it).
      fail(("--set %s: '%s' is %s; set it in the recipe"):format(text, prefix, node.type.name))
    else
      unknown_key(p, prefix, ctx)
    end
  end
  if node.kind == "section" then
    -- An optional section can be dropped as a whole (teacher.train=none to
    -- give a teacher.path instead); others are set key by key.
    if node.optional and (raw == "nil" or raw == "none") then return path, nil, true end
    fail(("--set %s: '%s' is a section; set one of its keys (%s.KEY=value)%s"):format(text, path, path,
      node.optional and (" or drop it (%s=none)"):format(path) or ""))
  end
  local value
  if raw == "nil" or raw == "none" then
    value = nil
  else
    local v, why = node.type.parse(raw)
    if v == nil then bad_value(path, node.type, raw, why, ctx) end
    local ok, why2 = node.type.check(v)
    if not ok then bad_value(path, node.type, v, why2, ctx) end
    value = v
  end
  return path, value, raw == "nil" or raw == "none"
end

local function set_path(tbl, path, value)
  local parts = {}
  for part in path:gmatch("[^.]+") do parts[#parts + 1] = part end
  local t = tbl
  for i = 1, #parts - 1 do
    if type(t[parts[i]]) ~= "table" then t[parts[i]] = {} end
    t = t[parts[i]]
  end
  t[parts[#parts]] = value
end

-- ---- resolution --------------------------------------------------------------------------------------

local function copy(v, seen)
  if type(v) ~= "table" or is_env(v) then return v end
  seen = seen or {}
  if seen[v] then return seen[v] end
  local out = {}
  seen[v] = out
  for k, x in pairs(v) do out[k] = copy(x, seen) end
  return out
end
M.copy = copy

local function basename(path)
  local b = (path or "recipe"):match("([^/]+)$") or "recipe"
  return (b:gsub("%.lua$", ""))
end

-- Fill a section: explicit values (env resolved), then defaults in order.
local function fill(node, raw, out, prefix, ctx, root)
  for _, f in ipairs(node.fields) do
    local path = join(prefix, f.name)
    local v = raw and raw[f.name]
    if f.kind == "section" then
      if f.optional and v == nil then
        out[f.name] = nil
      else
        out[f.name] = {}
        fill(f, v or {}, out[f.name], path, ctx, root)
      end
    else
      local source = ctx.set_paths[path] and "--set" or "recipe"
      if is_env(v) then
        ctx.env_keys[path] = { env = v.name, hint = v.hint }
        local value = ctx.getenv(v.name)
        if value ~= nil and value ~= "" then
          v, source = (v.prefix or "") .. value .. v.suffix, "$" .. v.name
        elseif v.default ~= nil then
          v, source = v.default, ("default ($%s unset)"):format(v.name)
        else
          ctx.missing[#ctx.missing + 1] = { key = path, env = v.name, hint = v.hint }
          v, source = nil, ("unset: $%s"):format(v.name)
        end
        if v ~= nil then check_value(path, f, v, ctx) end
        out[f.name] = v
      elseif v ~= nil then
        out[f.name] = copy(v)
      elseif f.late then
        -- Its default reads keys later in schema order: computed at the end.
        ctx.late[#ctx.late + 1] = function() out[f.name] = copy(f.default(root, ctx)) end
        source = "default"
      else
        local d = f.default
        if type(d) == "function" and f.type ~= T.func then d = d(root, ctx) end
        out[f.name] = copy(d)
        source = "default"
      end
      ctx.sources[path] = source
    end
  end
end

-- Paths inside data.dir.
local function in_dir(dir, p)
  if p == nil or dir == nil or p:sub(1, 1) == "/" then return p end
  return dir .. "/" .. p
end

local function check_layers(path, v, teacher_layers, ctx)
  if v == nil or teacher_layers == nil then return end
  if type(v) == "number" then
    if v > teacher_layers then
      fail(("bad value for '%s' in %s: %d layers, but the teacher has %d"):format(path, where(ctx), v, teacher_layers))
    end
    return
  end
  for i, x in ipairs(v) do
    if x >= teacher_layers then
      fail(("bad value for '%s' in %s: entry %d is teacher layer %d, but the teacher's layers are 0..%d"):format(
        path, where(ctx), i, x, teacher_layers - 1))
    end
  end
end

-- Checks that involve several keys.
local function cross_check(r, ctx)
  local c = { source = ctx.source }
  local t = r.teacher
  if t.path ~= nil and t.train ~= nil then
    fail(("recipe %s: teacher.path and teacher.train are both set; give a checkpoint or a spec to train, not both")
      :format(ctx.source or "(table)"))
  end
  local teacher_path_missing = false
  for _, m in ipairs(ctx.missing) do if m.key == "teacher.path" then teacher_path_missing = true end end
  if t.path == nil and t.train == nil and not teacher_path_missing then
    fail(("recipe %s: no teacher: set teacher.path (a Hugging Face BART directory) or teacher.train (a spec to "
      .. "train one first)"):format(ctx.source or "(table)"))
  end
  local ok, bits = pcall(function() return require("dqbart.quant_plan").parse(r.quant.bits) end)
  if not ok then
    fail(("bad value for 'quant.bits' in %s: %s"):format(where(c), (tostring(bits):gsub("^.-quant%.parse: ", ""))))
  end
  if r.quant.enabled == false and (bits.weight ~= 32 or bits.embedding ~= 32 or bits.activation ~= 32) then
    fail(("recipe %s: quant.enabled = false contradicts quant.bits = '%s'; drop one of them (32-32-32 is "
      .. "no quantization)"):format(ctx.source or "(table)", r.quant.bits))
  end
  if t.train then
    local tr = t.train
    if tr.d_model % tr.heads ~= 0 then
      fail(("bad value for 'teacher.train.heads' in %s: d_model %d is not divisible by %d heads"):format(where(c),
        tr.d_model, tr.heads))
    end
    check_layers("student.encoder_layers", r.student.encoder_layers, tr.encoder_layers, c)
    check_layers("student.decoder_layers", r.student.decoder_layers, tr.decoder_layers, c)
    local needed = math.max(r.data.max_source_length, r.data.max_target_length)
    if tr.max_positions < needed then
      fail(("bad value for 'teacher.train.max_positions' in %s: %d positions cannot hold sequences of %d tokens "
        .. "(data.max_source_length / max_target_length)"):format(where(c), tr.max_positions, needed))
    end
  end
  local maps = { encoder_map = "encoder_layers", decoder_map = "decoder_layers" }
  for map, layers in pairs(maps) do
    local m, s = r.distill[map], r.student[layers]
    if m ~= nil and s ~= nil then
      local n = type(s) == "number" and s or #s
      if #m ~= n then
        fail(("bad value for 'distill.%s' in %s: %d entries for a student with %d %s"):format(map, where(c), #m, n,
          layers:gsub("_", " ")))
      end
    end
  end
  if r.eval.min_length > r.eval.max_length then
    fail(("bad value for 'eval.min_length' in %s: %d is above eval.max_length %d"):format(where(c),
      r.eval.min_length, r.eval.max_length))
  end
  if r.data.source == nil then
    fail(("recipe %s: data.source is not set and task '%s' has no default field; set data.source and data.target")
      :format(ctx.source or "(table)", r.task))
  end
  if r.data.target == nil then
    fail(("recipe %s: data.target is not set and task '%s' has no default field"):format(ctx.source or "(table)",
      r.task))
  end
  if r.device ~= "auto" and r.device ~= "cpu" and r.device ~= "cuda" and not r.device:match("^cuda:%d+$") then
    fail(("bad value for 'device' in %s: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got %q"):format(where(c),
      r.device))
  end
end

-- tbl: a recipe table (dq.recipe{...} or plain). opts: source (file name for
-- messages), sets (list of "key=value"), getenv (function, default
-- os.getenv). Returns the resolved recipe (every key present, data paths
-- joined with data.dir) and info.
function M.resolve(tbl, opts)
  opts = opts or {}
  local source = opts.source
  local ctx = { source = source, sources = {}, missing = {}, set_paths = {}, late = {}, env_keys = {},
    getenv = opts.getenv or os.getenv,
    default_name = basename(source) }
  check_structure(SCHEMA, tbl, "", ctx)
  local raw = copy(tbl)
  for _, text in ipairs(opts.sets or {}) do
    local path, value = M.parse_set(text)
    set_path(raw, path, value)
    ctx.set_paths[path] = true
  end
  local r = {}
  fill(SCHEMA, raw, r, "", ctx, r)
  for _, compute in ipairs(ctx.late) do compute() end
  cross_check(r, ctx)
  -- data paths relative to data.dir
  for _, k in ipairs({ "train", "valid", "test" }) do r.data[k] = in_dir(r.data.dir, r.data[k]) end
  local info = { source = source, sources = ctx.sources, missing = ctx.missing, env_keys = ctx.env_keys }
  return r, info
end

-- Run a recipe file (with `dq` loaded) and resolve what it returns.
function M.load(path, opts)
  opts = opts or {}
  local chunk, err = loadfile(path)
  if not chunk then fail(err) end
  local ok, result = pcall(chunk)
  if not ok then fail(tostring(result)) end
  if type(result) ~= "table" then
    fail(("recipe %s: the file must return a recipe table (return dq.recipe{ ... }), got %s"):format(path,
      type(result)))
  end
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  o.source = path
  return M.resolve(result, o)
end

-- The layer maps of the student and of the losses, from the teacher's
-- layer counts: { encoder_layers = {...}, decoder_layers = {...},
-- encoder_map = {...}, decoder_map = {...} } (0-based teacher layers).
function M.layer_maps(r, teacher_encoder_layers, teacher_decoder_layers)
  local select = require("dqbart.select")
  local c = { source = nil }
  check_layers("student.encoder_layers", r.student.encoder_layers, teacher_encoder_layers, c)
  check_layers("student.decoder_layers", r.student.decoder_layers, teacher_decoder_layers, c)
  local maps = select.maps({ encoder_layers = teacher_encoder_layers, decoder_layers = teacher_decoder_layers },
    { encoder = r.student.encoder_layers, decoder = r.student.decoder_layers })
  for _, k in ipairs({ "encoder", "decoder" }) do
    local m = r.distill[k .. "_map"]
    check_layers("distill." .. k .. "_map", m, k == "encoder" and teacher_encoder_layers or teacher_decoder_layers, c)
    maps[k .. "_map"] = m and copy(m) or copy(maps[k .. "_layers"])
  end
  return maps
end

-- ---- printing ----------------------------------------------------------------------------------------

-- The shortest decimal that reads back as the same double.
local function number_text(v)
  if v == math.huge then return "math.huge" end
  if v == -math.huge then return "-math.huge" end
  if v % 1 == 0 and math.abs(v) < 1e15 then return ("%d"):format(v) end
  for digits = 1, 17 do
    local s = ("%." .. digits .. "g"):format(v)
    if tonumber(s) == v then return s end
  end
  return ("%.17g"):format(v)
end

local function is_identifier(k)
  return type(k) == "string" and k:match("^[%a_][%w_]*$") ~= nil
end

local function value_text(v, indent)
  local t = type(v)
  if t == "string" then return ("%q"):format(v) end
  if t == "number" then return number_text(v) end
  if t == "boolean" or t == "nil" then return tostring(v) end
  if t == "function" then return "<function>" end
  if t == "table" then
    if next(v) == nil then return "{}" end
    if #v > 0 then
      local parts = {}
      for i, x in ipairs(v) do parts[i] = value_text(x, indent) end
      return "{ " .. table.concat(parts, ", ") .. " }"
    end
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = k end
    table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
    local parts = {}
    for _, k in ipairs(keys) do
      local key = is_identifier(k) and k or ("[%q]"):format(k)
      parts[#parts + 1] = key .. " = " .. value_text(v[k], indent)
    end
    return "{ " .. table.concat(parts, ", ") .. " }"
  end
  return tostring(v)
end
M.value_text = value_text

-- The resolved recipe as Lua text in schema order; each value annotated
-- with where it came from when it is not the recipe's own.
function M.format(r, info)
  info = info or { sources = {} }
  local lines = { "{" }
  local function emit(node, tbl, prefix, indent)
    for _, f in ipairs(node.fields) do
      local path = join(prefix, f.name)
      local v = tbl and tbl[f.name]
      if f.kind == "section" then
        if v == nil then
          lines[#lines + 1] = ("%s%s = nil,"):format(indent, f.name)
        else
          lines[#lines + 1] = ("%s%s = {"):format(indent, f.name)
          emit(f, v, path, indent .. "  ")
          lines[#lines + 1] = indent .. "},"
        end
      else
        local text = ("%s%s = %s,"):format(indent, f.name, value_text(v, indent))
        local src = info.sources and info.sources[path]
        if src and src ~= "recipe" then
          text = text .. string.rep(" ", math.max(1, 48 - #text)) .. "-- " .. src
        end
        lines[#lines + 1] = text
      end
    end
  end
  emit(SCHEMA, r, "", "  ")
  lines[#lines + 1] = "}"
  return table.concat(lines, "\n")
end

-- Every key with its type, default and doc, for --schema.
function M.doc()
  local lines = {}
  local function default_text(f)
    if f.default_doc then return f.default_doc end
    if type(f.default) == "function" then return "computed" end
    if f.default == nil then return "none" end
    return value_text(f.default)
  end
  local function emit(node, prefix, indent)
    for _, f in ipairs(node.fields) do
      local path = join(prefix, f.name)
      if f.kind == "section" then
        lines[#lines + 1] = ("%s%s: %s%s"):format(indent, path, f.doc, f.optional and " (optional section)" or "")
        emit(f, path, indent .. "  ")
      else
        lines[#lines + 1] = ("%s%s  (%s; default: %s)"):format(indent, path, f.type.name, default_text(f))
        lines[#lines + 1] = ("%s    %s"):format(indent, f.doc)
      end
    end
  end
  emit(SCHEMA, "", "")
  return table.concat(lines, "\n")
end

return setmetatable(M, {
  __call = function(_, tbl)
    if type(tbl) ~= "table" then error("dq.recipe: expected a table: dq.recipe { ... }", 2) end
    return construct(tbl)
  end,
})
