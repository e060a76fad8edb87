-- dqbart.run: what `dqbart RECIPE.lua [options]` does when the file returns
-- a recipe table: resolve it (defaults, environment, --set), then
--   --dry-run   print the resolved recipe, the layer maps, the model shapes,
--               the size report and the updates per epoch, and exit 0;
--   --schema    print every recipe key with its type, default and doc;
--   otherwise   train (the DQ loop of lib/dqbart/dq.lua), after checking
--               that every input the recipe names is there.
local dq = require("dqbart")
local recipe = require("dqbart.recipe")
local schedule = require("dqbart.schedule")

local M = {}

local function spec_for(path)
  return {
    command = path,
    summary = "Run a DQ-BART recipe: train the student it describes (the teacher first when the recipe asks).",
    options = {
      { "--dry-run", flag = true, help = "print the resolved recipe, layer maps, model shapes, size and steps; exit" },
      { "--set", metavar = "KEY=VALUE", multiple = true,
        help = "override a recipe key (repeatable): --set optim.lr=1e-4 --set student.encoder_layers=0,2,5" },
      { "--schema", flag = true, help = "list every recipe key with its type, default and meaning" },
      { "--resume", flag = true,
        help = "continue from the checkpoint in the output directory (the recipe key resume = true)" },
    },
    epilog = "Values in --set are read by the key's type: numbers, true/false, text, lists as 0,2,5;\n"
      .. "none clears a key, or drops an optional section (--set teacher.train=none).\n"
      .. "Ctrl-C or SIGTERM saves a checkpoint and exits (130, 143); --resume continues.",
  }
end

local function file_exists(path)
  local f = path and io.open(path, "rb")
  if f then f:close() return true end
  return false
end

local function say(...) io.write(string.format(...), "\n") end

-- ---- teacher shape -------------------------------------------------------------------------------

-- The teacher's configuration: from its config.json, or what teacher.train
-- will build; nil and a reason when neither is known.
function M.teacher_config(r)
  local t = r.teacher
  if t.path then
    if not file_exists(t.path .. "/config.json") then
      return nil, ("the teacher directory %s has no config.json"):format(t.path)
    end
    local cfg = dq.config.load(t.path)
    cfg.source = t.path .. "/config.json"
    return cfg
  end
  if t.train then
    local tr = t.train
    return {
      model_type = "bart", source = "teacher.train (to be trained)",
      d_model = tr.d_model, encoder_layers = tr.encoder_layers, decoder_layers = tr.decoder_layers,
      encoder_attention_heads = tr.heads, decoder_attention_heads = tr.heads,
      encoder_ffn_dim = tr.ffn_dim, decoder_ffn_dim = tr.ffn_dim, vocab_size = tr.vocab_size,
      max_position_embeddings = tr.max_positions, add_final_layer_norm = false, tie_word_embeddings = true,
    }
  end
  return nil, "teacher.path is not set"
end

local function millions(n)
  if n >= 1e6 then return ("%.2fM"):format(n / 1e6) end
  return ("%.1fk"):format(n / 1e3)
end

local function list_text(l) return recipe.value_text(l) end

-- ---- data ----------------------------------------------------------------------------------------

-- Examples in a data file: its non-blank lines (minus a TSV header).
function M.count_examples(path, r)
  local f = io.open(path, "rb")
  if not f then return nil end
  local n = 0
  for line in f:lines() do
    if line:find("%S") then n = n + 1 end
  end
  f:close()
  local format = r.data.format or dq.data.detect_format(path)
  local header = r.data.header
  if header == nil then header = format == "tsv" and tonumber(r.data.source) == nil end
  if format == "tsv" and header and n > 0 then n = n - 1 end
  return n
end

local function limited(n, limit)
  if limit and n > limit then return limit end
  return n
end

-- ---- the report --------------------------------------------------------------------------------------

local function report_device(r)
  local device = r.device
  if device == "auto" then
    device = dq.cuda_available() and "cuda" or "cpu"
    say("device: auto -> %s%s", device, device == "cpu" and " (no GPU found)" or "")
  else
    say("device: %s", device)
  end
  local precision = r.precision
  if precision == "auto" then precision = device == "cpu" and "f32" or "bf16 (f32 master weights)" end
  say("precision: %s", precision)
end

local function report_teacher_and_student(r)
  local cfg, why = M.teacher_config(r)
  say("\n== teacher ==")
  if not cfg then
    say("not available: %s", why)
    return nil
  end
  if r.teacher.train then
    local tr = r.teacher.train
    say("trained first into %s: BART d_model %d, %d+%d layers, %d heads, ffn %d, BPE vocabulary of at most %d "
      .. "tokens, %d positions; %s at lr %g", tr.dir, tr.d_model, tr.encoder_layers, tr.decoder_layers, tr.heads,
      tr.ffn_dim, tr.vocab_size, tr.max_positions,
      tr.max_steps and ("%d updates"):format(tr.max_steps) or (recipe.value_text(tr.epochs) .. " epochs"), tr.lr)
  else
    say("%s (%s)", r.teacher.path, cfg.model_type)
  end

  local ok, maps = pcall(recipe.layer_maps, r, cfg.encoder_layers, cfg.decoder_layers)
  say("\n== layer maps (0-based teacher layers; DQBART.md section 3) ==")
  if not ok then
    say("invalid: %s", tostring(maps))
    return nil
  end
  say("student encoder layers copy teacher layers %s", list_text(maps.encoder_layers))
  say("student decoder layers copy teacher layers %s", list_text(maps.decoder_layers))
  if r.distill.enabled then
    local function hidden(m)
      local parts = { "0->0" }
      for i, t in ipairs(m) do parts[#parts + 1] = ("%d->%d"):format(i, t + 1) end
      return table.concat(parts, ", ")
    end
    say("losses pair encoder attention with teacher layers %s, hidden states %s", list_text(maps.encoder_map),
      hidden(maps.encoder_map))
    say("losses pair decoder attention with teacher layers %s, hidden states %s", list_text(maps.decoder_map),
      hidden(maps.decoder_map))
  else
    say("no distillation losses (distill.enabled = false)")
  end

  say("\n== model shapes ==")
  local enc, dec = #maps.encoder_layers, #maps.decoder_layers
  local teacher_size = dq.size.report(cfg, { bits = "32-32-32" })
  local bits = r.quant.enabled and r.quant.bits or "32-32-32"
  local student_size = dq.size.report(cfg, { bits = bits, encoder_layers = enc, decoder_layers = dec })
  local function params(s) return s.quantized_linear_params + s.embedding_params + s.full_precision_params end
  say("%-8s %-7s %-7s %-6s %-6s %-7s %-9s %s", "", "layers", "d_model", "heads", "ffn", "vocab", "positions",
    "parameters")
  local heads = ("%d/%d"):format(cfg.encoder_attention_heads, cfg.decoder_attention_heads)
  local ffn = cfg.encoder_ffn_dim == cfg.decoder_ffn_dim and tostring(cfg.encoder_ffn_dim)
    or ("%d/%d"):format(cfg.encoder_ffn_dim, cfg.decoder_ffn_dim)
  for _, row in ipairs({ { "teacher", cfg.encoder_layers, cfg.decoder_layers, teacher_size },
    { "student", enc, dec, student_size } }) do
    say("%-8s %-7s %-7d %-6s %-6s %-7d %-9d %s", row[1], row[2] .. "+" .. row[3], cfg.d_model, heads, ffn,
      cfg.vocab_size, cfg.max_position_embeddings, millions(params(row[4])))
  end

  say("\n== size (DQBART.md section 6, MiB = 2^20 bytes) ==")
  say("teacher  32-32-32  %9.2f MiB", teacher_size.mib)
  say("student  %-8s  %9.2f MiB  (%.1fx smaller)", bits, student_size.mib, student_size.ratio)
  return cfg
end

local function report_steps(r, missing_keys, info)
  say("\n== steps ==")
  local d = r.data
  if missing_keys["data.dir"] then
    say("data: not available (data.dir is unset)")
    return
  end
  local counts = {}
  for _, split in ipairs({ "train", "valid", "test" }) do
    local n = M.count_examples(d[split], r)
    if n then
      counts[split] = limited(n, d["limit_" .. split])
      say("%s: %s: %d examples%s", split, d[split], counts[split],
        counts[split] ~= n and (" (of %d)"):format(n) or "")
    else
      say("%s: %s: missing", split, d[split])
    end
  end
  local n = counts.train
  if not n then
    say("updates per epoch: unknown (no training data)")
    local dir_env = info.env_keys and info.env_keys["data.dir"]
    if dir_env and dir_env.hint then say("data.dir comes from $%s: %s", dir_env.env, dir_env.hint) end
    return
  end
  if r.teacher.train then
    local tr = r.teacher.train
    local per = schedule.steps_per_epoch({ examples = n, batch_size = tr.batch_size })
    local total = schedule.total_steps({ epochs = tr.epochs, max_steps = tr.max_steps, steps_per_epoch = per })
    say("teacher training: %d updates per epoch (batch %d), %d in all, %d warmup", per, tr.batch_size, total,
      schedule.warmup_steps(total, tr.warmup_ratio, r.schedule.warmup_rounding))
  end
  local b = r.batch
  if b.max_tokens then
    say("updates per epoch: depend on the token lengths (batch.max_tokens = %d); at most %d", b.max_tokens,
      schedule.steps_per_epoch({ examples = n, batch_size = 1, accumulation = b.accumulation }))
    return
  end
  local per = schedule.steps_per_epoch({ examples = n, batch_size = b.size, accumulation = b.accumulation })
  local s = r.schedule
  local total = schedule.total_steps({ epochs = s.epochs, max_steps = s.max_steps, steps_per_epoch = per })
  local warmup = s.warmup_steps or schedule.warmup_steps(total, s.warmup_ratio, s.warmup_rounding)
  say("updates per epoch: %d (%d batches of %d, %d per update)", per, math.ceil(n / b.size), b.size, b.accumulation)
  say("updates in all: %d%s, %d of them warmup, then %s", total,
    s.max_steps and " (schedule.max_steps)" or (" (%s epochs)"):format(recipe.value_text(s.epochs)), warmup,
    s.kind == "linear" and "linear decay to 0" or s.kind)
  if r.eval.every_steps then
    say("validation every %d updates%s", r.eval.every_steps, r.eval.each_epoch and " and after each epoch" or "")
  elseif r.eval.each_epoch then
    say("validation after each epoch (%s)", r.eval.metric)
  end
end

local function report_missing(missing)
  if #missing == 0 then return end
  say("\n== missing ==")
  for _, m in ipairs(missing) do
    say("%s: set $%s or --set %s=...%s", m.key, m.env, m.key, m.hint and ("\n    " .. m.hint:gsub("\n", "\n    ")) or "")
  end
end

function M.dry_run(r, info)
  say("== recipe %s ==", info.source or "")
  say("%s", recipe.format(r, info))
  report_device(r)
  local missing_keys = {}
  for _, m in ipairs(info.missing) do missing_keys[m.key] = true end
  report_teacher_and_student(r)
  report_steps(r, missing_keys, info)
  report_missing(info.missing)
  return 0
end

-- ---- running ---------------------------------------------------------------------------------------

-- What a run needs before it starts: every environment value, the
-- teacher and the training data.
function M.check_inputs(r, info)
  local problems = {}
  for _, m in ipairs(info.missing) do
    problems[#problems + 1] = ("%s is not set: set the environment variable %s or --set %s=...%s"):format(m.key,
      m.env, m.key, m.hint and ("\n    " .. m.hint:gsub("\n", "\n    ")) or "")
  end
  if #problems == 0 then
    if r.teacher.path and not file_exists(r.teacher.path .. "/config.json") then
      problems[#problems + 1] = ("teacher.path %s has no config.json (a Hugging Face checkpoint directory is "
        .. "expected)"):format(r.teacher.path)
    end
    local dir_env = info.env_keys and info.env_keys["data.dir"]
    for _, split in ipairs({ "train", "valid" }) do
      if not file_exists(r.data[split]) then
        local hint = dir_env and dir_env.hint and ("\n    (data.dir comes from $%s: %s)"):format(dir_env.env,
          dir_env.hint:gsub("\n", "\n    ")) or ""
        problems[#problems + 1] = ("data.%s: %s does not exist%s"):format(split, r.data[split], hint)
      end
    end
  end
  return problems
end

function M.train(r, info)
  local problems = M.check_inputs(r, info)
  if #problems > 0 then
    io.stderr:write(("dqbart: recipe %s cannot run:\n  %s\n"):format(info.source or "", table.concat(problems, "\n  ")))
    return 2
  end
  local loop = require("dqbart.dq")
  -- A message without a source position is the user's to read (a missing
  -- file, a checkpoint of another recipe): no traceback for those.
  local ok, code = xpcall(function() return loop.run(r, info) end, function(e)
    e = tostring(e)
    if e:find("%.lua:%d+:") then return debug.traceback(e, 2) end
    return e
  end)
  if not ok then
    io.stderr:write("dqbart: ", code, "\n")
    return 1
  end
  return code or 0
end

-- result: what the recipe file returned; path: the file; script_arg: its arg table.
function M.main(result, path, script_arg)
  local argv = {}
  for i = 1, #(script_arg or {}) do argv[i] = script_arg[i] end
  local opts, code = require("dqbart.cli.args").parse(argv, spec_for(path))
  if not opts then return code end
  if opts.schema then
    print(recipe.doc())
    return 0
  end
  local sets = opts.set or {}
  if opts.resume then
    local with = {}
    for i, v in ipairs(sets) do with[i] = v end
    with[#with + 1] = "resume=true"
    sets = with
  end
  local ok, r, info = pcall(recipe.resolve, result, { source = path, sets = sets })
  if not ok then
    io.stderr:write("dqbart: ", tostring(r), "\n")
    return 2
  end
  if opts.dry_run then return M.dry_run(r, info) end
  return M.train(r, info)
end

return M
