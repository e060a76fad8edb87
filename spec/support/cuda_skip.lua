-- cuda_skip: the preamble of every describe block that needs a GPU.
--
--   describe("... on CUDA", function()
--     if cuda_skip.skipped() then return end
--     ...
--
-- On a machine without a CUDA device it registers one test in the block and
-- returns true, so the caller skips the rest: a pending test (and a printed
-- "SKIP: ..." line), so the skip is visible; or, with DQ_DEVICE=cuda set
-- (a CI job meant for a GPU), a failing one, so such a job cannot pass
-- without running the GPU tests. With a device it returns false.
local dq = require("dqbart")

local M = {}

-- Specs that compare CUDA with the CPU run their GPU side on M.device:
-- "cuda", or "cpu" when DQ_CUDA_SPEC_DEVICE=cpu asks for a dry run of the
-- spec itself on a machine without a GPU (M.on_gpu is false then, and such
-- a spec does not skip itself).
M.device = os.getenv("DQ_CUDA_SPEC_DEVICE") or "cuda"
M.on_gpu = M.device ~= "cpu"

-- pending_name: the name of the pending test ("needs a CUDA device").
function M.skipped(pending_name)
  if dq.cuda_device_count() > 0 then return false end
  -- busted's `it` and `pending` live in the spec's environment (the
  -- caller's), not in _G; `pending` looked up there while a test runs is the
  -- one that marks that test pending.
  local spec = getfenv(2)
  local reason = ("no CUDA device (built with CUDA: %s)"):format(dq.built_with_cuda() and "yes" or "no")
  if os.getenv("DQ_DEVICE") == "cuda" then
    spec.it("needs a CUDA device, since DQ_DEVICE=cuda", function()
      error("DQ_DEVICE=cuda is set, but " .. reason, 0)
    end)
  else
    print("SKIP: " .. reason)
    spec.it(pending_name or "needs a CUDA device", function() spec.pending("SKIP: " .. reason) end)
  end
  return true
end

return M
