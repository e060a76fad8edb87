-- dq.quant: the quantizer ops (bindings/dqbart/quant.lua) plus the W-E-A
-- shorthand of DQ-BART configurations (DQBART.md section 2).
--
--   dq.quant.parse("2-2-8")  -> { weight = 2, embedding = 2, activation = 8 }
--   dq.quant.plan("2-2-8")   -> the quantizer options (dq.quant.quantize's
--                               opts) of each role, false where 32 = off
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

return M
