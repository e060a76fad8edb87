-- dqbart.trainer_run: a resolved recipe run end to end (`dqbart RECIPE`):
--   1. the teacher: the recipe's checkpoint, or trained from scratch first
--      (teacher.train; reused when already trained for the same spec);
--   2. the student: teacher layers by the layer maps, under the
--      quantization plan (W-E-A bits);
--   3. the DQ loop (lib/dqbart/trainer.lua with the step of dq.lua),
--      validating and keeping the best checkpoint by eval.metric;
--   4. the report: teacher and student on the test set (size, compression,
--      ROUGE or the loss), printed and written to results.json.
--
--   trainer_run.run(r, info, opts) -> exit code (0 done, 130 interrupted by
--   Ctrl-C, 143 by SIGTERM, 3 a non-finite loss), { result = the trainer's
--   result, rows = the report's rows when done }. opts (for specs): out,
--   tty, stop_after, resume.
local dq = require("dqbart")
local recipe = require("dqbart.recipe")
local checkpoint = require("dqbart.checkpoint")
local trainer = require("dqbart.trainer")
local trainer_eval = require("dqbart.trainer_eval")
local teacher_mod = require("dqbart.teacher")
local dq_step = require("dqbart.dq")
local progress = require("dqbart.progress")

local M = {}

-- Messages go to the run's output (io.stdout unless a caller gives another).
local out = io.stdout
local function say(fmt, ...) out:write(fmt:format(...), "\n"); out:flush() end

function M.device_of(r)
  local device = r.device
  if device == "auto" then device = dq.cuda_available() and "cuda" or "cpu" end
  local dtype = r.precision
  if dtype == "auto" then dtype = device == "cpu" and "f32" or "bf16" end
  return device, dtype
end

-- The exit code of a run that stopped early (the shell's 128 + signal).
local function exit_code(result)
  if result.status == "nonfinite" then return 3 end
  return result.signal == "SIGTERM" and 143 or 130
end

local function min_limit(a, b)
  if a and b then return math.min(a, b) end
  return a or b
end

-- The tokenizers of a checkpoint directory (mBART: the language templates).
local function tokenizers(r, dir)
  local d = r.data
  local tok = dq.tokenizer.load(dir)
  local target = tok
  if d.source_lang then tok:set_template("$A </s> " .. d.source_lang) end
  if d.target_lang then
    target = dq.tokenizer.load(dir)
    target:set_template("$A </s> " .. d.target_lang)
  end
  return tok, target
end

-- Datasets of the recipe's data with the tokenizer in `dir`.
function M.datasets(r, dir, model_type)
  local d = r.data
  local tok, target_tok = tokenizers(r, dir)
  local function make(path, limit)
    return dq.data.dataset({
      path = path, format = d.format, source = d.source, target = d.target, header = d.header, limit = limit,
      tokenizer = tok, target_tokenizer = target_tok, max_source_length = d.max_source_length,
      max_target_length = d.max_target_length, model = model_type or "bart", cache = d.cache,
      cache_dir = d.cache_dir,
    })
  end
  local sets = { tokenizer = tok }
  sets.train = make(d.train, d.limit_train)
  if checkpoint.exists(d.valid) then sets.valid = make(d.valid, min_limit(d.limit_valid, r.eval.limit)) end
  sets.make_test = function()
    if checkpoint.exists(d.test) then return make(d.test, d.limit_test), d.test, d.limit_test end
    return sets.valid, d.valid, min_limit(d.limit_valid, r.eval.limit)
  end
  return sets
end

-- The quantization plan of the recipe, for model:set_quant (nil: none).
function M.quant_plan(r)
  local q = r.quant
  if not q.enabled or q.bits == "32-32-32" then return nil end
  if next(q.overrides or {}) then
    error("quant.overrides: per-parameter quantizer settings are not supported by the engine yet; remove them", 0)
  end
  local spec = { bits = q.bits, clip = q.clip }
  local defaults = { weight = { "auto", "tensor" }, embedding = { "auto", "row" }, activation = { "sym", "tensor" } }
  for role, d in pairs(defaults) do
    local method, granularity = q[role .. "_method"], q[role .. "_granularity"]
    if method ~= d[1] or granularity ~= d[2] then spec[role] = { method = method, granularity = granularity } end
  end
  return spec
end

local function generation_opts(r)
  local e = r.eval
  return { beams = e.beams, num_beams = e.beams, length_penalty = e.length_penalty, max_length = e.max_length,
    min_length = e.min_length, no_repeat_ngram_size = e.no_repeat_ngram_size, early_stopping = e.early_stopping,
    batch_size = r.batch.eval_size, max_source_length = r.data.max_source_length }
end

-- ---- the report --------------------------------------------------------------------------------

local function score_text(v) return v and ("%.2f"):format(v) or "-" end

function M.report(rows, split_name, metric_note)
  local lines = {}
  local head = ("%-9s %-9s %-7s %9s %7s %8s %8s %8s %8s"):format("model", "W-E-A", "layers", "MiB", "ratio",
    "ROUGE-1", "ROUGE-2", "ROUGE-L", "loss")
  lines[#lines + 1] = ("== results on the %s set ==%s"):format(split_name, metric_note or "")
  lines[#lines + 1] = head
  for _, row in ipairs(rows) do
    local s = row.scores or {}
    lines[#lines + 1] = ("%-9s %-9s %-7s %9.2f %6.1fx %8s %8s %8s %8s"):format(row.name, row.bits, row.layers,
      row.mib, row.ratio, score_text(s.rouge1), score_text(s.rouge2), score_text(s.rougeL),
      s.loss and ("%.4f"):format(s.loss) or "-")
  end
  return table.concat(lines, "\n")
end

-- ---- run ---------------------------------------------------------------------------------------

function M.run(r, info, opts)
  -- one run at a time writes an output directory
  return checkpoint.with_lock(r.output_dir, "output_dir", M.run_locked, r, info, opts)
end

function M.run_locked(r, info, opts)
  opts = opts or {}
  out = opts.out or io.stdout
  local t_start = progress.now()
  local device, dtype = M.device_of(r)
  if r.threads and r.threads > 0 then dq.set_num_threads(r.threads) end
  checkpoint.mkdir_p(r.output_dir)
  say("dqbart: %s on %s (%s)%s", info and info.source or r.name, device, dtype,
    device == "cpu" and (", %d threads"):format(dq.get_num_threads()) or "")
  local resume = opts.resume
  if resume == nil then resume = r.resume end

  -- 1. the teacher
  local teacher_dir = r.teacher.path
  if r.teacher.train then
    local result
    teacher_dir, result = teacher_mod.ensure(r, {
      device = device, dtype = dtype, resume = resume, out = opts.out, tty = opts.tty,
      stop_after = opts.teacher_stop_after,
      datasets = function(dir) return M.datasets(r, dir, "bart") end,
    })
    if not teacher_dir then
      io.stderr:write("dqbart: teacher training ", result.message or result.status, "\n")
      return exit_code(result), { result = result }
    end
  end
  local teacher = dq.model.load(teacher_dir, { device = device, dtype = dtype })
  teacher:eval()
  local tinfo = teacher:info()
  local tcfg = dq.config.load(teacher_dir)

  -- 2. the student
  local maps = recipe.layer_maps(r, tinfo.encoder_layers, tinfo.decoder_layers)
  local student = teacher:student({ encoder_layers = maps.encoder_layers, decoder_layers = maps.decoder_layers })
  local plan = M.quant_plan(r)
  local bits = plan and r.quant.bits or "32-32-32"
  if plan then
    if student.set_quant then
      student:set_quant(plan)
    else
      say("warning: this build's model has no set_quant: the student trains in full precision")
      bits = "32-32-32"
    end
  end
  local sinfo = student:info()
  say("student: %d+%d layers (teacher encoder layers %s, decoder layers %s), %s", sinfo.encoder_layers,
    sinfo.decoder_layers, recipe.value_text(maps.encoder_layers), recipe.value_text(maps.decoder_layers), bits)

  local data = M.datasets(r, r.data.tokenizer or teacher_dir, tinfo.model_type)
  local metric = r.eval.metric
  if metric ~= "loss" and not trainer_eval.generation_available() then
    say("note: eval.metric is %s but generation (lib/dqbart/evaluate.lua) is not available: selecting by "
      .. "validation loss", metric)
    metric = "loss"
  end
  local valid_split = data.valid and { dataset = data.valid, path = r.data.valid,
    limit = min_limit(r.data.limit_valid, r.eval.limit) }
  local eval_opts = { metric = metric, device = device, batch_size = r.batch.eval_size * 4, tokenizer = data.tokenizer,
    data = r.data, generation = generation_opts(r) }

  -- 3. the loop
  local w = {}
  for _, t in ipairs(dq_step.TERMS) do w[t] = r.distill.weights[t] end
  if not r.distill.enabled then
    for _, t in ipairs(dq_step.TERMS) do if t ~= "task" then w[t] = 0 end end
  end
  local distill = r.distill.enabled
  local result = trainer.train({
    model = student, teacher = distill and teacher or nil, train = data.train, valid = data.valid,
    device = device, seed = r.seed, batch = { size = r.batch.size, accumulation = r.batch.accumulation,
      max_tokens = r.batch.max_tokens, shuffle = r.batch.shuffle, bucket = r.batch.bucket,
      pad_multiple = r.batch.pad_multiple },
    optim = { variant = r.optim.variant, lr = r.optim.lr, betas = r.optim.betas, eps = r.optim.eps,
      weight_decay = r.optim.weight_decay, no_decay = r.optim.no_decay, max_grad_norm = r.optim.max_grad_norm,
      skip_nonfinite = r.optim.skip_nonfinite },
    schedule = r.schedule, weights = w, label_smoothing = 0, temperature = r.distill.temperature,
    pairs = dq_step.layer_pairs(maps.encoder_map, maps.decoder_map, tinfo.encoder_layers),
    extra_losses = r.distill.extra_losses, step = r.step,
    evaluate = valid_split and function(m) return trainer_eval.score(m, valid_split, eval_opts) end or nil,
    eval = { every_steps = r.eval.every_steps, each_epoch = r.eval.each_epoch, save = r.eval.save },
    log = { every_steps = r.log.every_steps, file = r.log.file }, output_dir = r.output_dir, resume = resume,
    checkpoint_every_steps = r.checkpoint_every_steps, stop_after = opts.stop_after, out = opts.out,
    tty = opts.tty,
  })
  if result.status ~= "done" then
    io.stderr:write("dqbart: ", result.message or result.status, "\n")
    return exit_code(result), { result = result }
  end

  -- 4. the report
  local rows = {}
  if r.eval.test then
    if result.best_dir then student:load_weights(result.best_dir .. "/model.safetensors") end
    local test_set, test_path, test_limit = data.make_test()
    if test_set then
      local split = { dataset = test_set, path = test_path, limit = test_limit }
      local split_name = test_path == r.data.test and "test" or "validation"
      local full = dq.size.report(tcfg, { bits = "32-32-32" })
      local small = dq.size.report(tcfg, { bits = bits, encoder_layers = sinfo.encoder_layers,
        decoder_layers = sinfo.decoder_layers })
      local t_scores = trainer_eval.score(teacher, split, eval_opts)
      local s_scores = trainer_eval.score(student, split, eval_opts)
      rows[1] = { name = "teacher", bits = "32-32-32", layers = tinfo.encoder_layers .. "+" .. tinfo.decoder_layers,
        mib = full.mib, ratio = 1, scores = t_scores }
      rows[2] = { name = "student", bits = bits, layers = sinfo.encoder_layers .. "+" .. sinfo.decoder_layers,
        mib = small.mib, ratio = full.mib / small.mib, scores = s_scores }
      local note = metric == "loss" and r.eval.metric ~= "loss" and
        "\n(ROUGE needs generation, lib/dqbart/evaluate.lua, not available in this build: loss only)" or ""
      local text = M.report(rows, split_name, note)
      say("\n%s", text)
      checkpoint.write_file(r.output_dir .. "/results.json", checkpoint.json_encode({
        split = split_name, examples = test_set:size(), metric = metric,
        teacher = rows[1], student = rows[2], updates = result.update, best = result.best,
        seconds = progress.now() - t_start,
      }) .. "\n")
    end
  end
  say("\ndone in %s: %s%s", progress.duration(progress.now() - t_start), r.output_dir,
    result.best_dir and (" (best model: %s)"):format(result.best_dir) or "")
  student:free()
  teacher:free()
  return 0, { result = result, rows = rows }
end

return M
