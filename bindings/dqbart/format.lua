-- dqbart.format: tostring(tensor), in the spirit of torch's repr:
--
--   tensor([[ 0.1234, -1.5000],
--           [ 2.0000,  3.0000]], f32, cpu)
--
-- Large tensors show the first and last 3 entries of each dim around "...".
local tensor = require("dqbart.tensor")
local C = require("dqbart.ffi").C

local M = {}

local EDGE, SUMMARIZE_ABOVE = 3, 1000

-- Pick one number format for all shown values, as torch does.
local function number_format(values, is_float)
  if not is_float then return "%d" end
  local maxabs, minabs, all_int = 0, math.huge, true
  for _, v in ipairs(values) do
    if v == v and v ~= math.huge and v ~= -math.huge then
      local a = math.abs(v)
      if a > maxabs then maxabs = a end
      if a > 0 and a < minabs then minabs = a end
      if v % 1 ~= 0 then all_int = false end
    end
  end
  if all_int and maxabs < 1e8 then return "%.0f." end
  if maxabs >= 1e8 or (minabs < 1e-4 and minabs ~= math.huge) or (maxabs / minabs > 1e5 and minabs ~= math.huge) then
    return "%.4e"
  end
  return "%.4f"
end

local function fmt_value(fmt, v)
  if v ~= v then return "nan" end
  if v == math.huge then return "inf" end
  if v == -math.huge then return "-inf" end
  return (fmt:format(v))
end

function M.tostring(t)
  if not t:defined() then return "tensor(undefined)" end
  local suffix = ("%s, %s"):format(t:type(), t:device_name())
  local n = tonumber(t.numel)
  if n == 0 then return ("tensor([], shape=%s, %s)"):format(t:shape_string(), suffix) end
  local ptr, host, is_float = tensor.host_values(t)
  local shape, summarize = t:size(), n > SUMMARIZE_ABOVE
  -- flat index of a multi-index
  local strides, s = {}, 1
  for d = #shape, 1, -1 do strides[d] = s; s = s * shape[d] end
  local function shown(d)
    local idx = {}
    if summarize and shape[d] > 2 * EDGE then
      for i = 1, EDGE do idx[#idx + 1] = i end
      idx[#idx + 1] = false -- the ellipsis
      for i = shape[d] - EDGE + 1, shape[d] do idx[#idx + 1] = i end
    else
      for i = 1, shape[d] do idx[i] = i end
    end
    return idx
  end
  -- collect the shown values first to choose one format and width
  local values = {}
  local function collect(d, base)
    if d > #shape then values[#values + 1] = tonumber(ptr[base]); return end
    for _, i in ipairs(shown(d)) do if i then collect(d + 1, base + (i - 1) * strides[d]) end end
  end
  collect(1, 0)
  local fmt = number_format(values, is_float)
  local width = 0
  for _, v in ipairs(values) do width = math.max(width, #fmt_value(fmt, v)) end
  local function render(d, base, indent)
    if d > #shape then return ("%" .. width .. "s"):format(fmt_value(fmt, tonumber(ptr[base]))) end
    local parts = {}
    for _, i in ipairs(shown(d)) do
      parts[#parts + 1] = i and render(d + 1, base + (i - 1) * strides[d], indent .. " ") or "..."
    end
    local sep = d == #shape and ", " or (",\n" .. string.rep("\n", #shape - d - 1) .. indent .. " ")
    return "[" .. table.concat(parts, sep) .. "]"
  end
  local body = render(1, 0, "       ")
  host:free()
  return ("tensor(%s, %s)"):format(body, suffix)
end

tensor.metatable.__tostring = M.tostring
return M
