-- Model size as DQ-BART counts it (dq.size, `dqbart size`): the paper's
-- numbers for bart-base (DQBART.md section 6) from a hand-written
-- bart-base config.json (spec/fixtures/configs/bart_base).
local dq = require("dqbart")
local run = require("launcher").run_split -- dqbart ARGS -> stdout, stderr, exit code

local BART_BASE = "spec/fixtures/configs/bart_base"

describe("dq.size.report", function()
  local cfg = dq.config.load(BART_BASE)

  local cases = {
    { "32-32-32", 6, 6, 532.0, 1.0 },
    { "8-8-8", 6, 6, 138.1, 3.9 },
    { "2-2-8", 6, 6, 39.6, 13.4 },
    { "2-2-8", 6, 3, 32.7, 16.3 },
    { "2-2-8", 6, 1, 28.1, 18.9 },
    { "2-2-8", 3, 1, 22.9, 23.2 },
  }
  for _, c in ipairs(cases) do
    it(("bart-base %s with %d-%d layers is %.1f MiB"):format(c[1], c[2], c[3], c[4]), function()
      local r = dq.size.report(cfg, { bits = c[1], encoder_layers = c[2], decoder_layers = c[3] })
      assert.equal(c[4], tonumber(("%.1f"):format(r.mib)))
      assert.equal(c[5], tonumber(("%.1f"):format(r.ratio)))
    end)
  end

  it("bart-base 2-2-8 with 1-1 layers is 19.45 MiB, 27.4x", function()
    local r = dq.size.report(cfg, { bits = "2-2-8", encoder_layers = 1, decoder_layers = 1 })
    assert.equal("19.45", ("%.2f"):format(r.mib))
    assert.equal("27.4", ("%.1f"):format(r.ratio))
  end)

  it("activation bits do not change the size; the embedding counts once", function()
    local a = dq.size.report(cfg, { bits = "8-8-8" })
    local b = dq.size.report(cfg, { bits = "8-8-32" })
    assert.equal(a.bytes, b.bytes)
    local e2 = dq.size.report(cfg, { bits = "8-2-8" })
    assert.equal(a.bytes - e2.bytes, 50265 * 768 * 6 / 8)
  end)

  it("rejects layer counts beyond the model's", function()
    assert.has_error(function() dq.size.report(cfg, { bits = "2-2-8", encoder_layers = 7 }) end,
      "size.report: encoder_layers = 7; expected 1..6 (the model's)")
  end)
end)

describe("dqbart size", function()
  it("prints the MiB and the ratio", function()
    local out, err, code = run("size --model " .. BART_BASE .. " --bits 2-2-8 --encoder-layers 6 --decoder-layers 3")
    assert.equal(0, code, err)
    assert.matches("32%.7 MiB", out)
    assert.matches("16%.3x", out)
    out = run("size --model " .. BART_BASE .. " --bits 32-32-32")
    assert.matches("532%.0 MiB", out)
    out = run("size --model " .. BART_BASE .. " --bits 2-2-8 --encoder-layers 1 --decoder-layers 1")
    assert.matches("19%.45 MiB", out)
    assert.matches("27%.4x", out)
  end)

  it("prints JSON with --json", function()
    local out, err, code = run("size --model " .. BART_BASE .. " --bits 8-8-8 --json")
    assert.equal(0, code, err)
    assert.matches('"bits": "8%-8%-8"', out)
    assert.near(138.093, tonumber(out:match('"mib": ([%d.]+)')), 1e-3)
  end)

  it("fails clearly on bad bits and a missing model", function()
    local _, err, code = run("size --model " .. BART_BASE .. " --bits 2-2")
    assert.equal(1, code)
    assert.matches("expected three bit widths", err)
    _, err, code = run("size --model /nonexistent --bits 8-8-8")
    assert.equal(1, code)
    assert.matches("nonexistent", err)
    _, err, code = run("size --bits 8-8-8")
    assert.equal(2, code)
    assert.matches("missing required option %-%-model", err)
  end)
end)
