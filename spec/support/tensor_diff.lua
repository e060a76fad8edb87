-- tensor_diff: how far a tensor is from a reference, for parity specs.
local ffi = require("ffi")
local C = require("dqbart.ffi").C

local M = {}

-- A CPU f32 copy of t: a float pointer to its data, its element count and
-- the copy itself (keep it alive while the pointer is used; free it after).
function M.floats(t)
  local c = t:to("f32", "cpu")
  return ffi.cast("float*", c.data), tonumber(c.numel), c
end

-- max |a - b|, sum (a - b)^2 and sum b^2 over all elements (b: the
-- reference); a NaN difference makes the maximum NaN.
function M.diff_parts(a, b)
  assert(a:nelement() == b:nelement(), ("sizes differ: %d vs %d"):format(a:nelement(), b:nelement()))
  local pa, n, ka = M.floats(a)
  local pb, _, kb = M.floats(b)
  local worst, num, den = 0, 0, 0
  for i = 0, n - 1 do
    local d = math.abs(pa[i] - pb[i])
    if d > worst or d ~= d then worst = d end
    num = num + d * d
    den = den + pb[i] * pb[i]
  end
  ka:free()
  kb:free()
  return worst, num, den
end

-- max |a - b| and the relative norm |a - b| / |b| (b: the reference).
function M.diff(a, b)
  local worst, num, den = M.diff_parts(a, b)
  return worst, math.sqrt(num) / math.max(math.sqrt(den), 1e-30)
end

-- The tensor's storage bytes (its dtype's encoding) as a string.
function M.raw_bytes(t)
  local n = tonumber(t.numel) * tonumber(C.dq_dtype_size(t.dtype))
  local buf = ffi.new("uint8_t[?]", math.max(n, 1))
  t:to_buffer(buf)
  return ffi.string(buf, n)
end

-- Checks every tensor of `want` (a table name -> tensor) against the one
-- of that name in `got`: a message "NAME: missing" when got lacks it, else
-- "NAME: " .. check(name, got_tensor, want_tensor) when check returns a
-- message (nil: it agrees). Returns the messages and the number checked.
function M.mismatches(got, want, check)
  local failures, count = {}, 0
  for name, w in pairs(want) do
    count = count + 1
    local g = got[name]
    local why = g == nil and "missing" or check(name, g, w)
    if why then failures[#failures + 1] = name .. ": " .. why end
  end
  return failures, count
end

-- Fails listing (sorted, the first 15) the mismatch messages collected.
function M.assert_none(failures)
  table.sort(failures)
  assert(#failures == 0, ("%d mismatches:\n  %s"):format(#failures, table.concat(failures, "\n  ", 1,
    math.min(#failures, 15))))
end

return M
