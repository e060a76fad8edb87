-- dqbart.cli.gen_common: what `dqbart generate` and `dqbart eval` share:
-- their generation options, loading the model (device, dtype, quantization)
-- and tokenizer, reading sources, generating with progress on stderr, and
-- writing one line per prediction.
local dq = require("dqbart")
local generate = require("dqbart.generate")
local progress = require("dqbart.progress")

local M = {}

-- The options both commands take, then `extra`.
function M.options(extra)
  local list = {
    { "--model", metavar = "DIR", required = true, help = "checkpoint directory (config.json, model.safetensors)" },
    { "--data", metavar = "FILE", required = true, help = "sources: JSON Lines or TSV (or ids with --ids)" },
    { "--field", metavar = "NAME", default = "document",
      help = "source field (JSON: dotted path; TSV: column name or number)" },
    { "--format", metavar = "FMT", choices = { "jsonl", "tsv" }, help = "data format [default: from the extension]" },
    { "--limit", metavar = "N", type = "number", help = "use the first N examples only" },
    { "--tokenizer", metavar = "DIR", help = "tokenizer directory [default: --model]" },
    { "--beams", metavar = "N", type = "number", help = "num_beams (1: greedy) [default: the model's]" },
    { "--max-length", metavar = "N", type = "number", help = "longest output in tokens, with the start token" },
    { "--min-length", metavar = "N", type = "number", help = "EOS is banned below this length" },
    { "--length-penalty", metavar = "F", type = "number", help = "beam score = sum log p / length^F" },
    { "--no-repeat-ngram-size", metavar = "N", type = "number", help = "ban repeated n-grams (0: off)" },
    { "--early-stopping", metavar = "WHEN", choices = { "true", "false", "never" },
      help = "beam search stopping rule (transformers' early_stopping)" },
    { "--sample", flag = true, help = "sample instead of searching (num_beams 1)" },
    { "--top-k", metavar = "N", type = "number", help = "sampling: keep the k most likely tokens (0: off) [50]" },
    { "--top-p", metavar = "P", type = "number", help = "sampling: nucleus mass (1: off) [1]" },
    { "--temperature", metavar = "T", type = "number", help = "sampling temperature [1]" },
    { "--seed", metavar = "N", type = "number", default = 0, help = "sampling seed (Philox; reproducible)" },
    { "--batch-size", metavar = "N", type = "number", default = 16, help = "sources per batch" },
    { "--max-source-length", metavar = "N", type = "number",
      help = "truncate sources to N tokens [default: the model's max_position_embeddings]" },
    { "--device", metavar = "DEV", default = "cpu", choices = { "cpu", "cuda" } },
    { "--dtype", metavar = "DTYPE", default = "f32", choices = { "f32", "bf16" },
      help = "activation dtype (bf16 on cuda only)" },
    { "--quant", metavar = "W-E-A", help = "run as a DQ-BART student quantized to W-E-A bits (e.g. 2-2-8)" },
    { "--quiet", flag = true, help = "no progress output" },
  }
  for _, o in ipairs(extra or {}) do list[#list + 1] = o end
  return list
end

local function number_opt(opts, key, name, min)
  local v = opts[key]
  if v == nil then return nil end
  if v % 1 ~= 0 or (min and v < min) then
    error(("%s must be an integer%s, got %s"):format(name, min and (" >= " .. min) or "", tostring(v)), 0)
  end
  return v
end

-- Generation options from the command line (nil where not given).
function M.generation_options(opts)
  local g = {
    num_beams = number_opt(opts, "beams", "--beams", 1),
    max_length = number_opt(opts, "max_length", "--max-length", 2),
    min_length = number_opt(opts, "min_length", "--min-length", 0),
    no_repeat_ngram_size = number_opt(opts, "no_repeat_ngram_size", "--no-repeat-ngram-size", 0),
    length_penalty = opts.length_penalty,
    top_k = number_opt(opts, "top_k", "--top-k", 0),
    top_p = opts.top_p,
    temperature = opts.temperature,
    seed = number_opt(opts, "seed", "--seed", 0),
  }
  if opts.early_stopping then
    g.early_stopping = opts.early_stopping == "never" and "never" or opts.early_stopping == "true"
  end
  if opts.sample then
    g.do_sample = true
    g.num_beams = 1
  end
  return g
end

-- Load what a run needs: { model, tokenizer (nil with --ids), gen (the
-- generation options), device, name }.
function M.prepare(opts, name, defaults)
  if opts.dtype == "bf16" and opts.device ~= "cuda" then error("--dtype bf16 needs --device cuda", 0) end
  if opts.device == "cuda" and not dq.cuda_available() then
    error(("--device cuda: no CUDA device (built with CUDA: %s)"):format(dq.built_with_cuda() and "yes" or "no"), 0)
  end
  local batch = number_opt(opts, "batch_size", "--batch-size", 1)
  local job = { name = name, device = opts.device, batch_size = batch, t0 = progress.now() }
  job.model = dq.model.load(opts.model, { device = opts.device, dtype = opts.dtype })
  job.model:eval()
  local quant = opts.quant or (defaults and defaults.quant)
  if quant and quant ~= "32-32-32" then
    job.model:set_quant(quant, defaults and defaults.quant_opts or nil)
    job.quant = quant
  elseif not quant then
    -- a student saved by a run carries its plan (--quant 32-32-32: ignore it)
    local spec, quant_opts = dq.model.saved_quant(opts.model)
    if spec then
      job.model:set_quant(spec, quant_opts)
      job.quant = job.model:quant().bits
    end
  end
  if not opts.ids then job.tokenizer = dq.tokenizer.load(opts.tokenizer or opts.model) end
  local gen = {}
  for k, v in pairs(defaults and defaults.generation or {}) do gen[k] = v end
  for k, v in pairs(M.generation_options(opts)) do gen[k] = v end
  job.gen = gen
  job.resolved = generate.options(job.model, gen) -- fails early on bad settings
  job.max_source_length = number_opt(opts, "max_source_length", "--max-source-length", 1)
    or (defaults and defaults.max_source_length) or job.model:info().max_position_embeddings
  return job
end

-- Id lists of a --ids file: one source per line.
local function read_id_lines(path, limit)
  local f, err = io.open(path, "r")
  if not f then error(("cannot read %s: %s"):format(path, err), 0) end
  local out, n = {}, 0
  for line in f:lines() do
    n = n + 1
    if limit and #out >= limit then break end
    local ids = {}
    for tok in line:gmatch("%S+") do
      local v = tonumber(tok)
      if not v or v % 1 ~= 0 or v < 0 then
        f:close()
        error(("%s:%d: '%s' is not a token id"):format(path, n, tok), 0)
      end
      ids[#ids + 1] = v
    end
    if #ids == 0 then
      f:close()
      error(("%s:%d: no token ids on the line"):format(path, n), 0)
    end
    out[#out + 1] = ids
  end
  f:close()
  return out
end

-- Source and (when target is given) target texts of a data file.
function M.read_texts(path, opts, target)
  local read = require("dqbart.data.read")
  local sources, targets = {}, target and {} or nil
  for _, src, tgt in read.records(path, { format = opts.format, source = opts.field, target = target,
    limit = opts.limit }) do
    sources[#sources + 1] = src
    if targets then targets[#targets + 1] = tgt end
  end
  return sources, targets
end

-- job.sources (id lists) and job.texts (source texts, when read as text).
function M.read_sources(job, opts, target)
  if opts.ids then
    local ids = read_id_lines(opts.data, opts.limit)
    return ids, #ids
  end
  local texts, targets = M.read_texts(opts.data, opts, target)
  job.targets = targets
  local ids = generate.encode(job.tokenizer, texts, job.max_source_length)
  return ids, #ids
end

-- ---- progress on stderr --------------------------------------------------------------------

local function is_tty()
  local ok, launcher = pcall(require, "dqbart.launcher")
  return ok and launcher.isatty(2) or false
end

function M.reporter(total, quiet, label)
  if quiet or total == 0 then return nil end
  local tty, t0, last_tenth, last_draw = is_tty(), progress.now(), -1, 0
  return function(done, n)
    local now = progress.now()
    local rate = done / math.max(now - t0, 1e-9)
    local eta = (n - done) / math.max(rate, 1e-9)
    if tty then
      if done < n and now - last_draw < 0.2 then return end
      last_draw = now
      local width = 30
      local fill = math.floor(width * done / n + 0.5)
      io.stderr:write(("\r%s [%s%s] %d/%d  %.1f sources/s  ETA %s "):format(label, ("#"):rep(fill),
        ("."):rep(width - fill), done, n, rate, progress.duration(eta)))
      if done == n then io.stderr:write("\n") end
    else
      local tenth = math.floor(10 * done / n)
      if tenth > last_tenth or done == n then
        last_tenth = tenth
        io.stderr:write(("%s: %d/%d sources (%d%%), %.1f sources/s, elapsed %s, ETA %s\n"):format(label, done, n,
          math.floor(100 * done / n), rate, progress.duration(now - t0), progress.duration(eta)))
      end
    end
  end
end

-- Generate for the id lists: { sequences (id lists, input order), texts
-- (decoded, with a tokenizer), seconds, new_tokens }.
function M.generate(job, opts, sources, n)
  local gen = {}
  for k, v in pairs(job.gen) do gen[k] = v end
  gen.batch_size = job.batch_size
  gen.progress = M.reporter(n, opts.quiet, "dqbart " .. job.name)
  local t0 = progress.now()
  local seqs = generate.sources(job.model, sources, gen)
  local seconds = progress.now() - t0
  local new_tokens = 0
  for i = 1, n do new_tokens = new_tokens + #seqs[i] - 1 end
  local out = { sequences = seqs, seconds = seconds, new_tokens = new_tokens }
  if job.tokenizer then
    out.texts = {}
    for i = 1, n do out.texts[i] = generate.decode(job.tokenizer, seqs[i]) end
  end
  return out
end

-- Lines to a file, atomically (temporary file + rename).
function M.write_lines(path, lines)
  local tmp = path .. ".tmp" .. tostring(os.time())
  local f, err = io.open(tmp, "w")
  if not f then error(("cannot write %s: %s"):format(path, err), 0) end
  for _, line in ipairs(lines) do
    local ok, werr = f:write(line, "\n")
    if not ok then
      f:close()
      os.remove(tmp)
      error(("cannot write %s: %s"):format(path, werr), 0)
    end
  end
  f:close()
  local ok, rerr = os.rename(tmp, path)
  if not ok then
    os.remove(tmp)
    error(("cannot write %s: %s"):format(path, rerr), 0)
  end
end

function M.summary(job, results, n, out_path)
  if not out_path then return end
  local g = job.resolved
  local how = g.do_sample and "sampling" or g.num_beams > 1 and ("beam search (%d beams)"):format(g.num_beams)
    or "greedy search"
  io.stderr:write(("dqbart %s: %d predictions to %s, %s, %d new tokens in %.1f s (%.1f tokens/s)\n"):format(
    job.name, n, out_path, how, results.new_tokens, results.seconds,
    results.new_tokens / math.max(results.seconds, 1e-9)))
end

return M
