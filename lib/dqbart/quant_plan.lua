-- dq.quant: the quantizer ops (bindings/dqbart/quant.lua) plus the W-E-A
-- shorthand of DQ-BART configurations (DQBART.md section 2).
--
--   dq.quant.parse("2-2-8")  -> { weight = 2, embedding = 2, activation = 8 }
--   dq.quant.plan("2-2-8")   -> the quantizer options (dq.quant.quantize's
--                               opts) of each role, false where 32 = off
--   dq.quant.model_plan(spec, opts, layers)
--                            -> a student's plan (model:set_quant resolves
--                               its argument with this; see below)
--
-- Each width is 2..8, 16 or 32; 32 means full precision (not quantized),
-- 16 is a 16-bit symmetric quantizer (the reference's weight_bits = 16).
-- Weights and the embedding use TWN at 2 bits and Sym(b) otherwise;
-- activations always use Sym(b) (the reference's act_quantizer).
local ops = require("dqbart.quant")

local M = {}
for k, v in pairs(ops) do M[k] = v end

local ROLES = { "weight", "embedding", "activation" }

local function valid_bits(b)
  return b == 16 or b == 32 or (b >= 2 and b <= 8 and b % 1 == 0)
end

local function check_bits(role, b, text, level)
  if type(b) ~= "number" or not valid_bits(b) then
    error(("quant.parse: %s bits %s in '%s': expected 2..8, 16 or 32 (32 = full precision)"):format(
      role, tostring(b), text), level + 1)
  end
end

-- "W-E-A" (or a table with weight/embedding/activation) -> a table of bits.
function M.parse(wea, level)
  level = (level or 1) + 1
  if type(wea) == "table" then
    local out = {}
    for _, role in ipairs(ROLES) do
      check_bits(role, wea[role], "{...}", level)
      out[role] = wea[role]
    end
    for k in pairs(wea) do
      if k ~= "weight" and k ~= "embedding" and k ~= "activation" then
        error(("quant.parse: unknown key '%s' (weight, embedding, activation)"):format(tostring(k)), level)
      end
    end
    return out
  end
  if type(wea) ~= "string" then
    error(("quant.parse: expected a W-E-A string like \"2-2-8\", got %s"):format(type(wea)), level)
  end
  local parts = {}
  for p in (wea .. "-"):gmatch("([^-]*)-") do parts[#parts + 1] = p end
  if #parts ~= 3 then
    error(("quant.parse: '%s' is not W-E-A: expected three bit widths (weight-embedding-activation) like "
      .. "2-2-8 or 8-8-8"):format(wea), level)
  end
  local out = {}
  for i, role in ipairs(ROLES) do
    local s = parts[i]
    if not s:match("^%d+$") then
      error(("quant.parse: %s bits '%s' in '%s' is not a whole number"):format(role, s, wea), level)
    end
    local b = tonumber(s)
    check_bits(role, b, wea, level)
    out[role] = b
  end
  return out
end

-- "2-2-8" back from a parsed table.
function M.format(bits)
  return ("%d-%d-%d"):format(bits.weight, bits.embedding, bits.activation)
end

-- The quantizer of each role (dq.quant.quantize options, clip included)
-- as the reference applies them, or false when the role stays at 32 bits:
--   weight:     linear weights of the layers, per tensor
--   embedding:  the shared token embedding, per row
--   activation: linear inputs and attention operands, per tensor
function M.plan(wea, clip)
  local bits = M.parse(wea, 2)
  clip = clip or ops.DEFAULT_CLIP
  local function role(b, granularity, method)
    if b == 32 then return false end
    return { method = method or "auto", bits = b, granularity = granularity, clip = clip }
  end
  return {
    bits = bits,
    weight = role(bits.weight, "tensor"),
    embedding = role(bits.embedding, "row"),
    activation = role(bits.activation, "tensor", "sym"),
  }
end

-- ---- a student's plan (model:set_quant) -----------------------------------------------
--
-- spec is "W-E-A" or a table; every key is optional:
--   bits       "W-E-A" or { weight =, embedding =, activation = } (default "8-8-8")
--   clip       the clip of every role without its own (2.5); opts.clip
--              replaces every role's
--   weight, embedding, activation
--              false: that role stays in full precision; a table
--              { bits =, method =, granularity =, clip = } replaces the
--              role's settings (methods auto, sym, twn, bwn, asym;
--              granularity "tensor" or "row"). Defaults: weight auto per
--              tensor, embedding auto per row, activation sym per tensor.
--   linears    which linears are quantized (weight and input): a list of
--              q, k, v, out (self-attention), cross_q, cross_k, cross_v,
--              cross_out, fc1, fc2, or the groups self, cross, ffn, all;
--              "all" (default) or "none"
--   attention  which self-attention operands are quantized: query (scaled),
--              key, probs (after dropout), values; "all" (default) or "none"
--   cross_attention  the same for cross-attention (default: attention)
--   encoder, decoder  per layer (0-based layer numbers, as in parameter
--              names): { [layer] = { linears =, attention =, cross_attention = } }
--              replacing the lists above for that layer
-- The output of dq.quant.plan is a valid spec (its roles and bits).
-- layers = { encoder = n, decoder = n }. Returns
--   { bits = {...}, weight = role or false, embedding = ..., activation = ...,
--     encoder = { { linears = set, attention = set }, ... },       -- 1-based
--     decoder = { { linears =, attention =, cross_attention = }, ... } }
-- with role = { bits, method, granularity, clip } and set = { name = true }.

M.LINEARS = { "q", "k", "v", "out", "cross_q", "cross_k", "cross_v", "cross_out", "fc1", "fc2" }
M.OPERANDS = { "query", "key", "probs", "values" }
local LINEAR_GROUPS = {
  all = M.LINEARS,
  self = { "q", "k", "v", "out" },
  cross = { "cross_q", "cross_k", "cross_v", "cross_out" },
  ffn = { "fc1", "fc2" },
  none = {},
}
local OPERAND_GROUPS = { all = M.OPERANDS, none = {} }
local METHODS = { auto = true, sym = true, twn = true, bwn = true, asym = true }
local GRANULARITIES = { tensor = true, row = true }
local SPEC_KEYS = { bits = true, clip = true, weight = true, embedding = true, activation = true, linears = true,
  attention = true, cross_attention = true, encoder = true, decoder = true }
local ROLE_KEYS = { bits = true, method = true, granularity = true, clip = true }
local LAYER_KEYS = { linears = true, attention = true, cross_attention = true }

local function sorted_keys(t)
  local out = {}
  for k in pairs(t) do out[#out + 1] = tostring(k) end
  table.sort(out)
  return table.concat(out, ", ")
end

local function check_keys(t, valid, what, level)
  for k in pairs(t) do
    if not valid[k] then
      error(("quant plan: unknown key '%s' in %s (valid: %s)"):format(tostring(k), what, sorted_keys(valid)),
        level + 1)
    end
  end
end

-- A list of names (or group names) -> a set.
local function name_set(list, valid, groups, what, level)
  if list == nil then list = "all" end
  if list == false then list = "none" end
  if type(list) == "string" then list = { list } end
  if type(list) ~= "table" then
    error(("quant plan: %s must be a list of names or \"all\"/\"none\", got %s"):format(what, type(list)), level + 1)
  end
  local known = {}
  for _, n in ipairs(valid) do known[n] = true end
  local set = {}
  for i, n in ipairs(list) do
    if groups[n] then
      for _, m in ipairs(groups[n]) do set[m] = true end
    elseif known[n] then
      set[n] = true
    else
      local all = {}
      for _, v in ipairs(valid) do all[#all + 1] = v end
      for g in pairs(groups) do all[#all + 1] = g end
      table.sort(all)
      error(("quant plan: %s[%d] = '%s' is not one of %s"):format(what, i, tostring(n), table.concat(all, ", ")),
        level + 1)
    end
  end
  for k in pairs(list) do
    if type(k) ~= "number" then
      error(("quant plan: %s must be a list (found key '%s')"):format(what, tostring(k)), level + 1)
    end
  end
  return set
end

local DEFAULT_ROLES = {
  weight = { method = "auto", granularity = "tensor" },
  embedding = { method = "auto", granularity = "row" },
  activation = { method = "sym", granularity = "tensor" },
}

local function resolve_role(name, given, bits, clip, forced_clip, level)
  if given == false then return false end
  local r = { bits = bits, method = DEFAULT_ROLES[name].method, granularity = DEFAULT_ROLES[name].granularity,
    clip = clip }
  if given ~= nil then
    if type(given) ~= "table" then
      error(("quant plan: %s must be false or a table of bits, method, granularity, clip"):format(name), level + 1)
    end
    check_keys(given, ROLE_KEYS, name, level + 1)
    for k in pairs(ROLE_KEYS) do
      if given[k] ~= nil then r[k] = given[k] end
    end
  end
  if forced_clip then r.clip = forced_clip end
  if type(r.bits) ~= "number" or r.bits % 1 ~= 0 or r.bits < 1 or (r.bits > 16 and r.bits ~= 32) then
    error(("quant plan: %s bits %s: expected 1..16 or 32 (full precision)"):format(name, tostring(r.bits)), level + 1)
  end
  if r.bits == 32 then return false end
  if not METHODS[r.method] then
    error(("quant plan: %s method '%s' is not one of %s"):format(name, tostring(r.method), sorted_keys(METHODS)),
      level + 1)
  end
  if not GRANULARITIES[r.granularity] then
    error(("quant plan: %s granularity '%s' is not one of %s"):format(name, tostring(r.granularity),
      sorted_keys(GRANULARITIES)), level + 1)
  end
  if type(r.clip) ~= "number" or not (r.clip > 0) then
    error(("quant plan: clip %s: expected a positive number (math.huge for no clipping)"):format(tostring(r.clip)),
      level + 1)
  end
  return r
end

function M.model_plan(spec, opts, layers, level)
  level = (level or 1) + 1
  opts = opts or {}
  if type(spec) == "string" then spec = { bits = spec } end
  if type(spec) ~= "table" then
    error(("quant plan: expected \"W-E-A\" or a table, got %s"):format(type(spec)), level)
  end
  check_keys(spec, SPEC_KEYS, "the plan", level)
  local bits = M.parse(spec.bits or "8-8-8", level)
  -- opts.clip (set_quant's) wins over the roles' own clips, spec.clip is
  -- the default of those
  local clip = spec.clip or ops.DEFAULT_CLIP
  local plan = { bits = bits }
  for _, role in ipairs(ROLES) do plan[role] = resolve_role(role, spec[role], bits[role], clip, opts.clip, level) end
  -- the effective bits (a role table may change them)
  plan.bits = { weight = plan.weight and plan.weight.bits or 32, embedding = plan.embedding and plan.embedding.bits
    or 32, activation = plan.activation and plan.activation.bits or 32 }
  local linears = name_set(spec.linears, M.LINEARS, LINEAR_GROUPS, "linears", level)
  local attention = name_set(spec.attention, M.OPERANDS, OPERAND_GROUPS, "attention", level)
  local cross = spec.cross_attention == nil and attention or
      name_set(spec.cross_attention, M.OPERANDS, OPERAND_GROUPS, "cross_attention", level)
  local function stack(name, n, decoder)
    local per = spec[name] or {}
    if type(per) ~= "table" then
      error(("quant plan: %s must be a table { [layer] = {...} } (0-based layer numbers)"):format(name), level + 1)
    end
    for k, v in pairs(per) do
      if type(k) ~= "number" or k % 1 ~= 0 or k < 0 or k >= n then
        error(("quant plan: %s layer %s does not exist (the model's %s has layers 0 to %d)"):format(name,
          tostring(k), name, n - 1), level + 1)
      end
      if type(v) ~= "table" then
        error(("quant plan: %s[%d] must be a table of linears, attention, cross_attention"):format(name, k), level + 1)
      end
      check_keys(v, decoder and LAYER_KEYS or { linears = true, attention = true }, ("%s[%d]"):format(name, k),
        level + 1)
    end
    local out = {}
    for i = 1, n do
      local o = per[i - 1] or {}
      local where = ("%s[%d]"):format(name, i - 1)
      local l = {
        linears = o.linears ~= nil and name_set(o.linears, M.LINEARS, LINEAR_GROUPS, where .. ".linears", level + 1)
          or linears,
        attention = o.attention ~= nil and
          name_set(o.attention, M.OPERANDS, OPERAND_GROUPS, where .. ".attention", level + 1) or attention,
      }
      if decoder then
        l.cross_attention = o.cross_attention ~= nil and
          name_set(o.cross_attention, M.OPERANDS, OPERAND_GROUPS, where .. ".cross_attention", level + 1) or cross
      else
        if o.linears ~= nil then
          for _, c in ipairs(LINEAR_GROUPS.cross) do
            if l.linears[c] then
              error(("quant plan: %s.linears names %s; encoder layers have no cross-attention"):format(where, c),
                level + 1)
            end
          end
        end
        local own = {}
        for k in pairs(l.linears) do if not k:match("^cross_") then own[k] = true end end
        l.linears = own
      end
      out[i] = l
    end
    return out
  end
  if type(layers) ~= "table" or type(layers.encoder) ~= "number" or type(layers.decoder) ~= "number" then
    error("quant plan: layers must be { encoder = n, decoder = n }", level)
  end
  plan.encoder = stack("encoder", layers.encoder, false)
  plan.decoder = stack("decoder", layers.decoder, true)
  return plan
end

return M
