-- Runs busted inside the dqbart launcher, so specs see the same Lua paths
-- and library as users: `dqbart spec/busted.lua [busted options] SPEC...`.
-- spec/support/ holds helpers shared by specs (require "gradcheck", ...).
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
package.path = here .. "/support/?.lua;" .. package.path
-- Under Lua 5.1 busted reports failed specs by raising an error without a
-- value (busted.compatibility.exit), which the launcher would print as
-- "dqbart: nil": turn that one into a plain exit status 1.
local ok, err = pcall(require("busted.runner"), { standalone = false })
if not ok then
  if err ~= nil then error(err, 0) end
  io.stdout:flush()
  os.exit(1)
end
