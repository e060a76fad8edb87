-- `dqbart rouge` and `dqbart bleu`: JSON on stdout with the same numbers as
-- dq.metrics, clear errors for unreadable files and unequal line counts.
local dq = require("dqbart")
local metrics = dq.metrics
local files = require("files")
local run = require("launcher").run_split -- dqbart ARGS -> stdout, stderr, exit code

-- A new temporary file holding the lines.
local function write(lines)
  return files.temp_file(table.concat(lines, "\n") .. "\n")
end

-- The number printed for "key" inside the object printed for "section".
local function field(json, section, key)
  local body = json:match('"' .. section .. '": (%b{})')
  assert.is_truthy(body, "no section " .. section .. " in\n" .. json)
  local v = body:match('"' .. key .. '": ([-%d.eE+]+)')
  assert.is_truthy(v, "no " .. key .. " in " .. body)
  return tonumber(v)
end

local preds = { "The cat sat on the mat. <n> It was happy.", "Police arrested two men on Tuesday.",
                "Prices rose 3.5% to $1,000." }
local refs = { "A cat was sitting on a mat. <n> The cat seemed happy.", "Two men were arrested by police.",
               "Prices rose by 3.5 percent." }

describe("dqbart rouge", function()
  local p, r = write(preds), write(refs)

  it("prints the scores dq.metrics.rouge computes", function()
    local out, err, code = run(("rouge --pred %s --ref %s --lsum-sep '<n>'"):format(p, r))
    assert.equal(0, code, err)
    local want = metrics.rouge(preds, refs, { sentence_sep = "<n>" })
    for _, t in ipairs({ "rouge1", "rouge2", "rougeL", "rougeLsum" }) do
      assert.equal(want[t].f, field(out, t, "f"))
      assert.equal(want[t].p, field(out, t, "p"))
      local section = out:match('"' .. t .. '": (%b{})')
      local low = tonumber(section:match('"low": {[^}]*"f": ([-%d.eE+]+)'))
      local high = tonumber(section:match('"high": {[^}]*"f": ([-%d.eE+]+)'))
      assert.is_true(low <= want[t].f and want[t].f <= high, section)
    end
    assert.matches('"count": 3', out)
    assert.matches('"stem": true', out)
  end)

  it("honours --no-stem and --types", function()
    local out, _, code = run(("rouge --pred %s --ref %s --no-stem --types rouge2 --bootstrap 0"):format(p, r))
    assert.equal(0, code)
    local want = metrics.rouge(preds, refs, { stem = false, types = { "rouge2" } })
    assert.equal(want.rouge2.f, field(out, "rouge2", "f"))
    assert.is_falsy(out:find('"rouge1"', 1, true))
    assert.is_falsy(out:find('"low"', 1, true))
  end)

  it("names both files and counts when line counts differ", function()
    local short = write({ "only one line" })
    local _, err, code = run(("rouge --pred %s --ref %s"):format(p, short))
    assert.equal(1, code)
    assert.is_truthy(err:find(p, 1, true) and err:find(short, 1, true), err)
    assert.matches("has 3 lines", err)
    assert.matches("has 1 lines", err)
    os.remove(short)
  end)

  it("reports unreadable files and bad types", function()
    local _, err, code = run(("rouge --pred %s --ref /nonexistent/refs.txt"):format(p))
    assert.equal(1, code)
    assert.matches("cannot read %-%-ref: /nonexistent/refs.txt", err)
    _, err, code = run(("rouge --pred %s --ref %s --types rouge1,rougeQ"):format(p, r))
    assert.equal(1, code)
    assert.matches("unknown ROUGE type 'rougeQ'", err)
    _, _, code = run("rouge --pred " .. p)
    assert.equal(2, code)
  end)
end)

describe("dqbart bleu", function()
  local p, r = write(preds), write(refs)

  it("prints sacreBLEU's numbers and signature", function()
    local out, err, code = run(("bleu --pred %s --ref %s"):format(p, r))
    assert.equal(0, code, err)
    local want = metrics.bleu(preds, refs)
    assert.equal(want.score, tonumber(out:match('"score": ([-%d.eE+]+)')))
    assert.matches('"signature": "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0"', out, 1, true)
    assert.matches('"tok": "13a"', out, 1, true)
  end)

  it("takes several reference files", function()
    local r2 = write(preds)
    local out, _, code = run(("bleu --pred %s --ref %s --ref %s"):format(p, r, r2))
    assert.equal(0, code)
    assert.matches("nrefs:2|", out, 1, true)
    assert.is_true(tonumber(out:match('"score": ([-%d.eE+]+)')) > 99.99)
    os.remove(r2)
  end)

  it("names both files and counts when line counts differ", function()
    local long = write({ "a", "b", "c", "d" })
    local _, err, code = run(("bleu --pred %s --ref %s"):format(p, long))
    assert.equal(1, code)
    assert.is_truthy(err:find(p, 1, true) and err:find(long, 1, true), err)
    assert.matches("has 3 lines", err)
    assert.matches("has 4 lines", err)
    os.remove(long)
  end)
end)

describe("metrics.read_lines", function()
  it("drops the final newline and CRs, keeps empty lines", function()
    local path = files.temp_file("a\r\n\nb c\n")
    assert.are.same({ "a", "", "b c" }, metrics.read_lines(path))
    files.write(path, "no newline")
    assert.are.same({ "no newline" }, metrics.read_lines(path))
    os.remove(path)
  end)
end)
