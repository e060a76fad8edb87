-- Runs busted inside the dqbart launcher, so specs see the same Lua paths
-- and library as users: `dqbart spec/busted.lua [busted options] SPEC...`.
-- spec/support/ holds helpers shared by specs (require "gradcheck", ...).
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
package.path = here .. "/support/?.lua;" .. package.path
require("busted.runner")({ standalone = false })
