-- `dqbart forward`: the command parity checks run. Its output names and
-- values are a contract: every tensor the transformers fixture holds, under
-- the same name, within 1e-4 (max abs).
local dq = require("dqbart")
local launcher = require("launcher")
local tensor_diff = require("tensor_diff")

local FIXTURES = "spec/fixtures/bart/"

-- dqbart forward ARGS: stdout and stderr together, exit code
local function run(args)
  return launcher.run("forward " .. args)
end

describe("dqbart forward", function()
  for _, name in ipairs({ "bart", "mbart" }) do
    it(name .. " --grads writes every output, the loss and every gradient as transformers names them", function()
      local out_path = os.tmpname()
      local log, code = run(("--model %s%s --inputs %s%s_inputs.safetensors --out %s --grads"):format(
        FIXTURES, name, FIXTURES, name, out_path))
      assert.are.equal(0, code, log)
      local got = dq.safetensors.open(out_path):tensors()
      local want = dq.safetensors.open(FIXTURES .. name .. "_expected.safetensors"):tensors()
      local failures, n = tensor_diff.mismatches(got, want, function(_, g, w)
        if g:shape_string() ~= w:shape_string() or g:type() ~= "f32" then
          return ("is %s %s, expected %s f32"):format(g:shape_string(), g:type(), w:shape_string())
        end
        local worst = tensor_diff.diff(g, w)
        if not (worst <= 1e-4) then return ("differs by %g"):format(worst) end -- NaN fails too
      end)
      for k in pairs(got) do
        if not want[k] then failures[#failures + 1] = k .. " is not in the fixture" end
      end
      assert(#failures == 0, table.concat(failures, "\n"))
      assert.is_true(n > 100)
      os.remove(out_path)
    end)
  end

  it("without --grads writes outputs and the loss only", function()
    local out_path = os.tmpname()
    local log, code = run(("--model %sbart --inputs %sbart_inputs.safetensors --out %s"):format(FIXTURES, FIXTURES,
      out_path))
    assert.are.equal(0, code, log)
    local got = dq.safetensors.open(out_path)
    assert.is_true(got:contains("loss"))
    assert.is_true(got:contains("cross_attentions.1"))
    for _, k in ipairs(got:names()) do assert.is_nil(k:match("^grad%."), k) end
    os.remove(out_path)
  end)

  it("refuses --grads without labels, bf16 on the CPU and a bad model directory", function()
    local inputs = dq.safetensors.open(FIXTURES .. "bart_inputs.safetensors"):tensors()
    inputs.labels = nil
    local path = os.tmpname()
    dq.safetensors.save(path, inputs)
    local log, code = run(("--model %sbart --inputs %s --out /dev/null --grads"):format(FIXTURES, path))
    assert.are.equal(1, code)
    assert.matches("needs labels", log)
    log, code = run(("--model %sbart --inputs %s --out /dev/null --dtype bf16"):format(FIXTURES, path))
    assert.are.equal(1, code)
    assert.matches("bf16 needs %-%-device cuda", log)
    log, code = run(("--model %s/nowhere --inputs %s --out /dev/null"):format(FIXTURES, path))
    assert.are.equal(1, code)
    assert.matches("config.json", log)
    os.remove(path)
  end)
end)
