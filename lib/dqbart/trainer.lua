-- dqbart.trainer: the training loop around a step function (by default
-- the DQ step of lib/dqbart/dq.lua): batches, accumulation, the learning
-- rate schedule, logging, validation and model selection, checkpoints,
-- resuming, Ctrl-C and non-finite losses. Teacher training and the DQ run
-- both go through M.train.
--
--   local result = trainer.train(job)
--
-- job (every key but the models and data has a default):
--   model, teacher        the trained model; the frozen teacher (or nil)
--   train, valid          datasets (dq.data.dataset); valid may be nil
--   device, seed          "cpu" / "cuda:N"; seed of shuffling and dropout
--   batch                 { size, accumulation, max_tokens, shuffle, bucket, pad_multiple }
--   optim                 { variant, lr, betas, eps, weight_decay, no_decay, max_grad_norm, skip_nonfinite }
--   schedule              { kind, epochs, max_steps, warmup_ratio, warmup_steps, warmup_rounding, num_cycles }
--   weights               loss weights by term (dq.TERMS); label_smoothing; temperature (of kl, 1)
--   pairs                 intermediate output pairs (dq.layer_pairs)
--   extra_losses          { name = function(ctx) }   step: function(ctx) (default dq.step)
--   evaluate              function(model) -> scores ({ metric = name, [name] = value, ... })
--   eval                  { every_steps, each_epoch, save = "best" | "last" | "none" }
--   log                   { every_steps, file }      label: prefix of the progress line
--   output_dir            checkpoint/, best/, metrics.jsonl go there
--   checkpoint_every_steps, resume (true: output_dir/checkpoint, or a directory)
--   stop_after            stop (with a checkpoint, like Ctrl-C) after this many updates
--   out                   where progress goes (io.stdout)
-- result: { status = "done" | "interrupted" | "stopped" | "nonfinite", update =, best = {...},
--           message =, history = { per-update total losses of this process },
--           signal = "SIGINT" | "SIGTERM" when interrupted }
local dq_step = require("dqbart.dq")
local checkpoint = require("dqbart.checkpoint")
local progress = require("dqbart.progress")
local trainer_batch = require("dqbart.trainer_batch")
local trainer_eval = require("dqbart.trainer_eval")
local schedule = require("dqbart.schedule")
local optim = require("dqbart.optim")
local tensor = require("dqbart.tensor")
local rng = require("dqbart.rng")

local M = {}

M.CHECKPOINT = "checkpoint"
M.BEST = "best"
M.LAST = "last"
M.METRICS = "metrics.jsonl"

local function defaults(t, d)
  local out = {}
  for k, v in pairs(d) do out[k] = v end
  for k, v in pairs(t or {}) do out[k] = v end
  return out
end

-- The launcher's Ctrl-C flag (absent outside the launcher).
local function launcher()
  local ok, l = pcall(require, "dqbart.launcher")
  return ok and l or nil
end

-- ---- setup -------------------------------------------------------------------------------------

-- The terms this job logs: active built-in terms in dq.TERMS order, then
-- the extra losses by name, then the gradient norm when it is computed.
local function columns(job, extra)
  local cols = {}
  local w = job.weights
  for _, name in ipairs(dq_step.TERMS) do
    if (w[name] or 0) > 0 and (name == "task" or job.teacher) then cols[#cols + 1] = name end
  end
  for _, e in ipairs(extra) do cols[#cols + 1] = e[1] end
  return cols
end

local function sorted_extra(extra)
  local list = {}
  for name, fn in pairs(extra or {}) do list[#list + 1] = { name, fn } end
  table.sort(list, function(a, b) return a[1] < b[1] end)
  for _, e in ipairs(list) do
    for _, t in ipairs(dq_step.TERMS) do
      if e[1] == t or e[1] == "grad_norm" or e[1] == "loss" then
        error(("distill.extra_losses: '%s' is a built-in name; give the extra term another"):format(e[1]), 0)
      end
    end
  end
  return list
end

-- AdamW over the model's trainable parameters (weight decay masked by
-- name when asked); exported for the benchmarks that build a step by hand.
function M.make_optimizer(model, o)
  local info = model:info()
  local params = model:params():narrow(1, 1, info.trainable_numel)
  local grads = model:grads():narrow(1, 1, info.trainable_numel)
  local mask
  if (o.weight_decay or 0) > 0 and o.no_decay and #o.no_decay > 0 then
    local views = {}
    for i, name in ipairs(model:param_names()) do
      if model:trainable(i) then views[#views + 1] = { name = name, tensor = model:param(i) } end
    end
    mask = optim.decay_mask({ params = params, tensors = views, no_decay = o.no_decay })
    for _, v in ipairs(views) do v.tensor:free() end
  end
  return optim.adamw({
    params = params, grads = grads, lr = o.lr, betas = o.betas, eps = o.eps, weight_decay = o.weight_decay or 0,
    variant = o.variant, decay_mask = mask, skip_nonfinite = o.skip_nonfinite,
  })
end

-- The weights that count: a term at weight 0 is the same as no term (so a
-- checkpoint from before a term existed resumes).
local function active_weights(weights)
  local w = {}
  for k, v in pairs(weights or {}) do if v ~= 0 then w[k] = v end end
  return w
end

-- What must match for a checkpoint to continue this job exactly.
local function settings(job, total, per_epoch)
  local info = job.model:info()
  local w = active_weights(job.weights)
  return {
    model = ("%s d%d %d+%d v%d"):format(info.model_type, info.d_model, info.encoder_layers, info.decoder_layers,
      info.vocab_size),
    seed = job.seed, total_updates = total, updates_per_epoch = per_epoch,
    batch = ("%s x %d, max_tokens %s"):format(tostring(job.batch.size), job.batch.accumulation,
      tostring(job.batch.max_tokens)),
    lr = job.optim.lr, schedule = job.schedule.kind, weights = w, teacher = job.teacher ~= nil,
    temperature = w.kl and job.temperature or nil, -- only when the kl term is on
  }
end

local function describe_difference(a, b)
  local out = {}
  for k, v in pairs(a) do
    local x, y = checkpoint.json_encode(v), checkpoint.json_encode(b[k])
    if x ~= y then out[#out + 1] = ("%s: checkpoint %s, now %s"):format(k, y, x) end
  end
  table.sort(out)
  return table.concat(out, "; ")
end

-- ---- the loop ------------------------------------------------------------------------------------

local function json_line(path, record, order)
  local f = io.open(path, "ab")
  if not f then return end
  f:write(checkpoint.json_encode(record, order), "\n")
  f:close()
end

function M.train(job)
  local model = job.model
  local out_dir = job.output_dir or "."
  checkpoint.mkdir_p(out_dir)
  local batch = defaults(job.batch, { size = 8, accumulation = 1, shuffle = true, bucket = true })
  job.batch = batch
  job.optim = defaults(job.optim, { variant = "torch", lr = 1e-3, weight_decay = 0, max_grad_norm = 0,
    skip_nonfinite = false })
  job.schedule = defaults(job.schedule, { kind = "linear", epochs = 1, warmup_ratio = 0, warmup_rounding = "floor" })
  job.weights = defaults(job.weights, { task = 1, logits = 0, kl = 0, enc_att = 0, dec_att = 0, crs_att = 0,
    enc_hid = 0, dec_hid = 0, enc_hid_last = 0 })
  job.temperature = job.temperature or 1
  local eval_opts = defaults(job.eval, { each_epoch = true, save = "best" })
  local log_every = (job.log and job.log.every_steps) or 20
  local device = job.device or "cpu"
  local seed = job.seed or 28
  local metrics_path = out_dir .. "/" .. M.METRICS

  local loader = job.train:loader({ batch_size = batch.size, max_tokens = batch.max_tokens, shuffle = batch.shuffle,
    bucket = batch.bucket, pad_multiple = batch.pad_multiple, seed = seed })
  local accum = batch.accumulation
  local per_epoch = schedule.steps_per_epoch({ batches = loader:num_batches(), accumulation = accum })
  local s = job.schedule
  local total = schedule.total_steps({ epochs = s.epochs, max_steps = s.max_steps, steps_per_epoch = per_epoch })
  local sched = schedule.new({ kind = s.kind, lr = job.optim.lr, total_steps = total, warmup_steps = s.warmup_steps,
    warmup_ratio = s.warmup_ratio, warmup_rounding = s.warmup_rounding, num_cycles = s.num_cycles })

  local opt = M.make_optimizer(model, job.optim)
  local extra = sorted_extra(job.extra_losses)
  local cols = columns(job, extra)
  local track_norm = job.optim.max_grad_norm > 0 or job.optim.skip_nonfinite
  if track_norm then cols[#cols + 1] = "grad_norm" end
  local ncols = #cols

  -- Per-update values on the device: row k of `values` holds update k of the
  -- current logging interval; read with one copy when logging.
  local values = tensor.zeros({ log_every, math.max(ncols, 1) }, { device = device })
  local rows = {}
  for r = 1, log_every do
    local row = {}
    for c, name in ipairs(cols) do row[name] = values:view((r - 1) * ncols + c - 1) end
    rows[r] = row
  end

  local w = job.weights
  local need_hidden = job.teacher and (w.enc_hid > 0 or w.dec_hid > 0 or w.enc_hid_last > 0) or false
  local need_att = job.teacher and (w.enc_att > 0 or w.dec_att > 0 or w.crs_att > 0) or false
  local ctx = {
    student = model, teacher = job.teacher, weights = w, scale = 1 / accum, pairs = job.pairs,
    teacher_outputs = { output_hidden_states = need_hidden, output_attentions = need_att },
    rng = rng(seed), optimizer = opt, max_grad_norm = job.optim.max_grad_norm,
    label_smoothing = job.label_smoothing or 0, temperature = job.temperature, extra_losses = extra,
    host_values = {},
    job = job, total_updates = total,
  }
  local step_fn = job.step or dq_step.step

  -- resume
  local update, best = 0, nil
  local want = settings(job, total, per_epoch)
  if job.resume then
    local dir = type(job.resume) == "string" and job.resume or (out_dir .. "/" .. M.CHECKPOINT)
    local state, path = checkpoint.load(dir)
    if state then
      local had = state.settings or {}
      had.weights = active_weights(had.weights)
      local diff = describe_difference(want, had)
      if diff ~= "" then
        error(("cannot resume from %s: it was made with other settings (%s)"):format(path, diff), 0)
      end
      model:load_weights(path .. "/model.safetensors")
      checkpoint.load_optimizer(path, opt)
      loader:set_state(state.loader)
      ctx.rng:set_state(state.rng)
      update, best = state.update, state.best
      job.resumed_from = path
    else
      job.resumed_from = false
    end
  end
  if job.teacher then job.teacher:eval() end
  model:train()

  local shown_epochs = nil
  if not s.max_steps then shown_epochs = s.epochs end
  local p = progress.new({ total = total, epochs = shown_epochs, file = job.log and job.log.file,
    label = job.label, out = job.out, tty = job.tty, start_update = update })
  if job.resumed_from then
    p:message("resuming from %s at update %d (epoch %d, batch %d)", job.resumed_from, update, loader.epoch,
      loader.position)
  elseif job.resumed_from == false then
    p:message("no checkpoint in %s: starting from the beginning", type(job.resume) == "string" and job.resume
      or (out_dir .. "/" .. M.CHECKPOINT))
  end
  local l = launcher()
  if l then l.interrupt_mode("flag"); l.interrupted() end

  local dev = trainer_batch.new(device)
  local interval = { n = 0, micro = {}, tokens = 0, host = {}, t0 = progress.now() }
  local history = {}
  local result = { status = "done" }
  local last_eval_update, last_ckpt_update = nil, update
  local lr = 0

  local function state_table()
    return {
      update = update, epoch = loader.epoch, loader = loader:state(), rng = ctx.rng:state(), best = best,
      settings = want,
    }
  end

  local function save_checkpoint()
    checkpoint.save(out_dir .. "/" .. M.CHECKPOINT, { model = model, optimizer = opt, state = state_table() })
    last_ckpt_update = update
  end

  -- Read the interval's values (the only sync of the loop), log, check.
  local function flush()
    local n = interval.n
    if n == 0 then return true end
    local flat = ncols > 0 and values:narrow(1, 1, n):tolist() or {}
    values:zero_()
    local nonfinite_flag = opt:nonfinite()
    if nonfinite_flag then opt:reset_nonfinite() end
    local sums, first_bad = {}, nil
    local grad_bad
    for r = 1, n do
      local u = update - n + r
      local micro = interval.micro[r]
      local total_loss = 0
      for c, name in ipairs(cols) do
        local v = flat[(r - 1) * ncols + c]
        if name ~= "grad_norm" then
          local host = interval.host[r] and interval.host[r][name]
          if host then v = v + host end
          v = v / micro
          local wt = w[name] or 1
          total_loss = total_loss + wt * v
          if v ~= v or v == math.huge or v == -math.huge then
            first_bad = first_bad or { update = u, term = name, value = v }
          end
        elseif v ~= v or v == math.huge or v == -math.huge then
          grad_bad = grad_bad or { update = u, value = v }
        end
        sums[name] = (sums[name] or 0) + v
      end
      history[#history + 1] = total_loss
      sums.loss = (sums.loss or 0) + total_loss
    end
    local now = progress.now()
    local rec = { type = "train", update = update, epoch = interval.epoch or loader.epoch, updates = n, lr = lr,
      tokens_per_s = interval.tokens / math.max(now - interval.t0, 1e-9), elapsed_s = now - p.start }
    local terms = {}
    for _, name in ipairs(cols) do
      rec[name] = sums[name] / n
      if name ~= "grad_norm" then terms[#terms + 1] = { name, rec[name] } end
    end
    rec.loss = sums.loss / n
    json_line(metrics_path, rec, { "type", "update", "epoch", "loss" })
    p:interval({ update = update, epoch = interval.epoch or loader.epoch, lr = lr, loss = rec.loss, terms = terms,
      tokens_per_s = rec.tokens_per_s })
    interval.n, interval.tokens, interval.t0, interval.micro, interval.host = 0, 0, now, {}, {}
    if first_bad then
      result.status = "nonfinite"
      result.message = ("update %d: the loss term '%s' is %s; stopping (the last checkpoint, if any, is in %s/%s)")
        :format(first_bad.update, first_bad.term, progress.number(first_bad.value), out_dir, M.CHECKPOINT)
      return false
    end
    if grad_bad or nonfinite_flag then
      local where = grad_bad and ("update %d"):format(grad_bad.update) or ("an update up to %d"):format(update)
      if job.optim.skip_nonfinite then
        p:message("%s: the gradient norm is not finite; that update was skipped", where)
      else
        result.status = "nonfinite"
        result.message = ("%s: the gradient norm is not finite; stopping"):format(where)
        return false
      end
    end
    return true
  end

  local function evaluate(reason)
    if not job.evaluate then return end
    if not flush() then return end
    local scores = job.evaluate(model)
    model:train()
    last_eval_update = update
    local metric = scores.metric or "loss"
    local value = scores[metric]
    local improved = trainer_eval.better(metric, value, best and best.value)
    local rec = { type = "eval", update = update, epoch = interval.epoch or loader.epoch, metric = metric,
      reason = reason,
      best = improved }
    for k, v in pairs(scores) do if type(v) == "number" then rec[k] = v end end
    json_line(metrics_path, rec, { "type", "update", "epoch", "metric" })
    local shown = {}
    for _, k in ipairs({ "loss", "rouge1", "rouge2", "rougeL", "rougeLsum", "bleu" }) do
      if scores[k] then shown[#shown + 1] = ("%s %s"):format(k, progress.number(scores[k])) end
    end
    p:message("%svalidation at update %d: %s%s (%.0f s)", job.label and (job.label .. " ") or "", update,
      table.concat(shown, ", "), improved and (" - best " .. metric .. " so far") or "", scores.seconds or 0)
    if improved then
      best = { metric = metric, value = value, update = update, scores = scores }
      if eval_opts.save == "best" then
        checkpoint.publish(out_dir .. "/" .. M.BEST, function(tmp) model:save(tmp) end)
      end
    end
  end

  local function stop_with_checkpoint(status, why)
    flush()
    save_checkpoint()
    result.status = status
    result.message = ("%s at update %d: checkpoint saved in %s/%s; continue with --resume"):format(why, update,
      out_dir, M.CHECKPOINT)
  end

  local ok, err = xpcall(function()
    local micro = {}
    while update < total do
      -- gather the micro-batches of one update
      local epoch_end = false
      for k = 1, accum do
        local b = loader:next()
        if not b then epoch_end = true break end
        micro[k] = b
      end
      local count = #micro
      if count > 0 then
        interval.epoch = micro[1].epoch
        local batches = {}
        for k = 1, count do
          batches[k] = dev:put(micro[k], k)
          interval.tokens = interval.tokens + micro[k].source_tokens + micro[k].target_tokens
        end
        interval.n = interval.n + 1
        ctx.values, ctx.batches, ctx.update = rows[interval.n], batches, update
        ctx.host_values = {}
        lr = sched:lr(update)
        ctx.lr = lr
        step_fn(ctx)
        interval.micro[interval.n] = count
        interval.host[interval.n] = next(ctx.host_values) and ctx.host_values or nil
        for k = 1, count do micro[k]:free(); micro[k] = nil end
        update = update + 1
        p:update({ update = update, epoch = interval.epoch, lr = lr, loss = p.last and p.last.loss,
          terms = p.last and p.last.terms })
        if interval.n == log_every or update == total then
          if not flush() then return end
        end
        if eval_opts.every_steps and update % eval_opts.every_steps == 0 then evaluate("every_steps") end
        if result.status ~= "done" then return end
        if job.checkpoint_every_steps and update % job.checkpoint_every_steps == 0 then
          if not flush() then return end
          save_checkpoint()
        end
        if job.stop_after and update >= job.stop_after and update < total then
          stop_with_checkpoint("stopped", "stopped")
          return
        end
      end
      if epoch_end then
        if eval_opts.each_epoch and last_eval_update ~= update then evaluate("epoch") end
        if result.status ~= "done" then return end
        if last_ckpt_update ~= update then
          if not flush() then return end
          save_checkpoint()
        end
      end
      local interrupted, signal = false, nil
      if l then interrupted, signal = l.interrupted() end
      if interrupted then
        result.signal = signal
        stop_with_checkpoint("interrupted", signal == "SIGTERM" and "terminated (SIGTERM)" or "interrupted (Ctrl-C)")
        return
      end
    end
    if not flush() then return end
    if last_eval_update ~= update then evaluate("end") end
    if result.status ~= "done" then return end
    if last_ckpt_update ~= update or not checkpoint.exists(out_dir .. "/" .. M.CHECKPOINT) then save_checkpoint() end
    if eval_opts.save == "last" or (eval_opts.save == "best" and not best) then
      local name = eval_opts.save == "last" and M.LAST or M.BEST
      checkpoint.publish(out_dir .. "/" .. name, function(tmp) model:save(tmp) end)
    end
  end, debug.traceback)
  if l then l.interrupt_mode("error") end
  p:close()
  dev:free()
  values:free()
  loader:free()
  if not ok then error(err, 0) end
  result.update, result.best, result.total = update, best, total
  result.history = history
  result.optimizer = opt
  result.best_dir = best and eval_opts.save == "best" and (out_dir .. "/" .. M.BEST) or nil
  if result.status == "done" then
    json_line(metrics_path, { type = "end", update = update, best_metric = best and best.metric,
      best_value = best and best.value, best_update = best and best.update }, { "type", "update" })
  end
  return result
end

return M
