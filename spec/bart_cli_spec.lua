-- `dqbart forward`: the command parity checks run. Its output names and
-- values are a contract: every tensor the transformers fixture holds, under
-- the same name, within 1e-4 (max abs).
local ffi = require("ffi")
local dq = require("dqbart")

local build = os.getenv("DQ_SPEC_BUILD_DIR") or "build"
local exe = build .. "/dqbart"
local FIXTURES = "spec/fixtures/bart/"

local function run(args)
  local tmp = os.tmpname()
  local ok, _, code = os.execute(exe .. " forward " .. args .. " >" .. tmp .. " 2>&1")
  local f = assert(io.open(tmp))
  local out = f:read("*a")
  f:close()
  os.remove(tmp)
  if type(ok) == "number" then code = math.floor(ok / 256) end
  return out, code
end

local function max_abs(a, b)
  local pa, pb = ffi.cast("float*", a.data), ffi.cast("float*", b.data)
  local worst = 0
  for i = 0, tonumber(a.numel) - 1 do
    local d = math.abs(pa[i] - pb[i])
    if d > worst or d ~= d then worst = d end
  end
  return worst
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
      local failures, n = {}, 0
      for k, w in pairs(want) do
        n = n + 1
        local g = got[k]
        if not g then
          failures[#failures + 1] = k .. " missing"
        elseif g:shape_string() ~= w:shape_string() or g:type() ~= "f32" then
          failures[#failures + 1] = ("%s is %s %s, expected %s f32"):format(k, g:shape_string(), g:type(),
            w:shape_string())
        elseif max_abs(g, w) > 1e-4 then
          failures[#failures + 1] = ("%s differs by %g"):format(k, max_abs(g, w))
        end
      end
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
