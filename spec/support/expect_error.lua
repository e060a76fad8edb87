-- expect_error: calls that must fail, and what their message says.
local assert = require("luassert")

local M = {}

-- Calls fn(...), which must raise; returns the message (as a string).
function M.message(fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok, "expected an error")
  return tostring(err)
end

-- Calls fn(), which must raise a message containing every needle (plain
-- text, not patterns); returns the message.
function M.rejects(fn, ...)
  local ok, err = pcall(fn)
  assert.is_false(ok, "the call should have failed")
  err = tostring(err)
  for _, needle in ipairs({ ... }) do
    assert.is_truthy(err:find(needle, 1, true), ("message %q should contain %q"):format(err, needle))
  end
  return err
end

return M
