-- dqbart.generate_engine: the engine's generation (engine/dqbart_generate.h)
-- as Lua calls. lib/dqbart/generate.lua (dq.generate) is the library on top.
--
--   local ge = require("dqbart.generate_engine")
--   local opts = ge.defaults(model)            -- the model's generation config
--   local ws = ge.workspace()                   -- reusable caches; ws:free()
--   local seqs, lens, scores = ge.run(model, input_ids, attention_mask, opts, ws)
--     -- seqs [B, max_length] i64, lens [B] i64, scores [B] f32 (CPU tensors)
--   ws:stats() -> { steps, batch, beams, encoder_seconds, decoder_seconds, search_seconds }
--
-- Option keys (transformers' names): num_beams, do_sample, max_length,
-- max_new_tokens (max_length = 1 + max_new_tokens), min_length,
-- no_repeat_ngram_size, early_stopping (true, false or "never"),
-- length_penalty, temperature, top_k, top_p, seed, decoder_start_token_id,
-- eos_token_id, pad_token_id, forced_bos_token_id, forced_eos_token_id
-- (token ids: false or nil for none in defaults(); pass false to switch
-- one off). `beams` is accepted for num_beams.
local core = require("dqbart.ffi")
local tensor = require("dqbart.tensor")
local suggest = require("dqbart.suggest")
local ffi, C, check = core.ffi, core.C, core.check

local M = {}

local options_ct = ffi.typeof("dq_generate_options")
local stats_ct = ffi.typeof("dq_generate_stats")

local INT_KEYS = { "num_beams", "max_length", "min_length", "no_repeat_ngram_size", "top_k" }
local TOKEN_KEYS = { "decoder_start_token_id", "eos_token_id", "pad_token_id", "forced_bos_token_id",
  "forced_eos_token_id" }
local KNOWN = { do_sample = true, early_stopping = true, length_penalty = true, temperature = true, top_p = true,
  seed = true, max_new_tokens = true, beams = true }
for _, k in ipairs(INT_KEYS) do KNOWN[k] = true end
for _, k in ipairs(TOKEN_KEYS) do KNOWN[k] = true end
M.KEYS = KNOWN

local EARLY = { [false] = 0, [true] = 1, never = 2 }
local EARLY_NAMES = { [0] = false, true, "never" }

local function handle_of(model, level)
  local h = type(model) == "table" and model.handle or nil
  if h == nil then error("generate: expected a model (dq.model.load)", level + 1) end
  return h
end

local function to_table(o)
  local t = {
    do_sample = o.do_sample ~= 0, early_stopping = EARLY_NAMES[o.early_stopping],
    length_penalty = o.length_penalty, temperature = o.temperature, top_p = o.top_p,
    seed = tonumber(o.seed),
  }
  for _, k in ipairs(INT_KEYS) do t[k] = o[k] end
  for _, k in ipairs(TOKEN_KEYS) do
    local v = tonumber(o[k])
    t[k] = v >= 0 and v or false
  end
  return t
end

-- The model's defaults as a Lua table.
function M.defaults(model)
  local o = options_ct()
  check(C.dq_generate_defaults(handle_of(model, 2), o), 2)
  return to_table(o)
end

local function integer(key, v, level)
  if type(v) ~= "number" or v % 1 ~= 0 then
    error(("generate: option %s is %s; expected an integer"):format(key, tostring(v)), level + 1)
  end
  return v
end

-- opts (any subset of the keys) over the model's defaults -> the C struct.
function M.options(model, opts, level)
  level = (level or 1) + 1
  local o = options_ct()
  check(C.dq_generate_defaults(handle_of(model, level), o), level)
  opts = opts or {}
  for k in pairs(opts) do
    if not KNOWN[k] then
      error(("generate: unknown option %s (did you mean %s?)"):format(tostring(k), suggest.nearest(k, KNOWN)), level)
    end
  end
  if opts.beams ~= nil then o.num_beams = integer("beams", opts.beams, level) end
  for _, k in ipairs(INT_KEYS) do
    if opts[k] ~= nil then o[k] = integer(k, opts[k], level) end
  end
  if opts.max_new_tokens ~= nil then o.max_length = 1 + integer("max_new_tokens", opts.max_new_tokens, level) end
  for _, k in ipairs(TOKEN_KEYS) do
    local v = opts[k]
    if v == false then o[k] = -1 elseif v ~= nil then o[k] = integer(k, v, level) end
  end
  if opts.do_sample ~= nil then o.do_sample = opts.do_sample and 1 or 0 end
  if opts.early_stopping ~= nil then
    local e = EARLY[opts.early_stopping]
    if not e then
      error(("generate: early_stopping is %s; expected true, false or \"never\""):format(
        tostring(opts.early_stopping)), level)
    end
    o.early_stopping = e
  end
  for _, k in ipairs({ "length_penalty", "temperature", "top_p" }) do
    if opts[k] ~= nil then
      if type(opts[k]) ~= "number" then
        error(("generate: option %s is %s; expected a number"):format(k, tostring(opts[k])), level)
      end
      o[k] = opts[k]
    end
  end
  if opts.seed ~= nil then o.seed = integer("seed", opts.seed, level) end
  return o
end

-- The resolved options as a table (what run() will use).
function M.resolve(model, opts) return to_table(M.options(model, opts, 2)) end

-- ---- workspace ---------------------------------------------------------------------------

local Workspace = {}
Workspace.__index = Workspace

function M.workspace()
  local box = ffi.new("dq_generate_workspace*[1]")
  check(C.dq_generate_workspace_new(box), 2)
  return setmetatable({ handle = ffi.gc(box[0], C.dq_generate_workspace_free) }, Workspace)
end

function Workspace:free()
  if self.handle then
    local h = self.handle
    self.handle = nil
    ffi.gc(h, nil)
    C.dq_generate_workspace_free(h)
  end
end

function Workspace:bytes() return self.handle and tonumber(C.dq_generate_workspace_bytes(self.handle)) or 0 end

function Workspace:timing(on)
  check(C.dq_generate_workspace_timing(self.handle, on and 1 or 0), 2)
  return self
end

function Workspace:stats()
  local s = stats_ct()
  check(C.dq_generate_workspace_stats(self.handle, s), 2)
  return { steps = s.steps, batch = s.batch, beams = s.beams, encoder_seconds = s.encoder_seconds,
    decoder_seconds = s.decoder_seconds, search_seconds = s.search_seconds }
end

-- ---- running -----------------------------------------------------------------------------

-- input_ids [B, S] (i32/i64 tensor), attention_mask tensor or nil; opts a
-- table (over the model's defaults) or an options struct from M.options.
function M.run(model, input_ids, attention_mask, opts, ws)
  local h = handle_of(model, 2)
  if not tensor.is_tensor(input_ids) then error("generate: input_ids must be a tensor", 2) end
  if attention_mask ~= nil and not tensor.is_tensor(attention_mask) then
    error("generate: attention_mask must be a tensor or nil", 2)
  end
  local o = ffi.istype(options_ct, opts) and opts or M.options(model, opts, 2)
  local seqs, lens, scores = tensor.undefined(), tensor.undefined(), tensor.undefined()
  check(C.dq_generate(h, ws and ws.handle or nil, input_ids, attention_mask, o, seqs, lens, scores), 2)
  return seqs, lens, scores
end

return M
