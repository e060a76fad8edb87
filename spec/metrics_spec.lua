-- ROUGE and BLEU against what the reference packages answered for the same
-- texts (spec/fixtures/make_metrics_fixtures.py: rouge-score 0.1.2 with
-- nltk 3.10.4's PorterStemmer, sacreBLEU 2.6.0). Scores must agree to 1e-9
-- in x 100 terms (far tighter than the 4 decimals promised; in practice the
-- doubles are identical), for every pair and for the corpus.
local dq = require("dqbart")
local metrics = dq.metrics

local FIX = "spec/fixtures/metrics/"
local TOL = 1e-9

local function fixture(name) return dofile(FIX .. name) end

-- Compare lists of numbers; report the first few mismatches with context.
local function close(a, b) return math.abs(a - b) <= TOL end

local function expect_no_failures(failures, total, what)
  if #failures > 0 then
    local shown = {}
    for i = 1, math.min(#failures, 8) do shown[i] = failures[i] end
    error(("%d of %d %s differ:\n  %s"):format(#failures, total, what, table.concat(shown, "\n  ")), 2)
  end
end

describe("Porter stemmer (nltk NLTK_EXTENSIONS)", function()
  it("stems every recorded word as nltk does", function()
    local failures, total = {}, 0
    for line in io.lines(FIX .. "porter.tsv") do
      local word, stem = line:match("^([^\t]+)\t([^\t]*)$")
      total = total + 1
      local got = metrics.porter_stem(word)
      if got ~= stem then failures[#failures + 1] = ("%s -> %s, nltk %s"):format(word, got, stem) end
    end
    assert.is_true(total > 4000, "the fixture should hold thousands of words")
    expect_no_failures(failures, total, "stems")
  end)

  it("lowers upper case first and rejects other characters", function()
    assert.equal("run", metrics.porter_stem("RUNNING"))
    local ok, err = pcall(metrics.porter_stem, "café")
    assert.is_false(ok)
    assert.matches("dq_porter_stem", err)
    assert.matches("ASCII letters and digits", err)
  end)
end)

describe("ROUGE (rouge-score 0.1.2)", function()
  local fx = fixture("rouge_cases.lua")
  local preds, refs = {}, {}
  for i, c in ipairs(fx.cases) do preds[i], refs[i] = c.pred, c.ref end

  it("tokenizes the edge cases as rouge-score (stemmed)", function()
    local failures, total = {}, 0
    for i, c in ipairs(fx.cases) do
      for _, side in ipairs({ "pred", "ref" }) do
        local want = c[side .. "_tokens"]
        if want then
          total = total + 1
          local got = table.concat(metrics.rouge_tokens(c[side]), " ")
          if got ~= want then
            failures[#failures + 1] = ("case %d %s %q: got %q, want %q"):format(i, side, c[side], got, want)
          end
        end
      end
    end
    assert.is_true(total > 50)
    expect_no_failures(failures, total, "tokenizations")
  end)

  for _, variant in ipairs({ { key = "stem", stem = true }, { key = "nostem", stem = false } }) do
    describe(variant.key, function()
      local result = metrics.rouge(preds, refs, { stem = variant.stem, per_example = true, types = fx.types })

      it("matches every pair's precision, recall and F", function()
        local failures, total = {}, 0
        for i, c in ipairs(fx.cases) do
          for _, t in ipairs(fx.types) do
            local want = c[variant.key][t]
            local per = result.per_example[t]
            local got = { per.p[i], per.r[i], per.f[i] }
            for j = 1, 3 do
              total = total + 1
              if not close(got[j], 100 * want[j]) then
                failures[#failures + 1] = ("case %d %s %s: got %.10f, rouge-score %.10f (pred %q, ref %q)")
                  :format(i, t, ({ "p", "r", "f" })[j], got[j], 100 * want[j], c.pred:sub(1, 60), c.ref:sub(1, 60))
              end
            end
          end
        end
        assert.is_true(total >= 4 * 3 * 350)
        expect_no_failures(failures, total, "scores")
      end)

      it("matches the corpus means", function()
        for _, t in ipairs(fx.types) do
          local want = fx.corpus[variant.key][t]
          assert.is_true(close(result[t].p, 100 * want[1]), t .. " precision")
          assert.is_true(close(result[t].r, 100 * want[2]), t .. " recall")
          assert.is_true(close(result[t].f, 100 * want[3]), t .. " F")
          assert.equal(("%.4f"):format(100 * want[3]), ("%.4f"):format(result[t].f))
        end
      end)
    end)
  end

  it("reads a sentence marker as a line break", function()
    local p, r = {}, {}
    for i, c in ipairs(fx.sep_cases) do p[i], r[i] = c.pred, c.ref end
    local result = metrics.rouge(p, r, { sentence_sep = fx.sep, per_example = true })
    for i, c in ipairs(fx.sep_cases) do
      for _, t in ipairs(fx.types) do
        assert.is_true(close(result.per_example[t].f[i], 100 * c.stem[t][3]),
          ("sep case %d %s: %.10f vs %.10f"):format(i, t, result.per_example[t].f[i], 100 * c.stem[t][3]))
      end
    end
  end)

  describe("bootstrap intervals", function()
    local boot = metrics.rouge(preds, refs, { bootstrap = 1000, seed = 7 })

    it("agree with BootstrapAggregator statistically", function()
      -- The generators differ, so compare within a fraction of the interval
      -- width: two runs of rouge-score itself with different numpy seeds
      -- differ by up to about 10% of the width at 1000 resamples.
      for _, t in ipairs(fx.types) do
        local want = fx.bootstrap[t]
        for j, k in ipairs({ "p", "r", "f" }) do
          local width = 100 * (want.high[j] - want.low[j])
          assert.is_true(width > 0)
          for _, bound in ipairs({ "low", "mid", "high" }) do
            local diff = math.abs(boot[t][bound][k] - 100 * want[bound][j])
            assert.is_true(diff < 0.15 * width,
              ("%s %s.%s: %.4f vs rouge-score %.4f (width %.4f)"):format(t, bound, k, boot[t][bound][k],
                100 * want[bound][j], width))
          end
          assert.is_true(boot[t].low[k] <= boot[t][k] and boot[t][k] <= boot[t].high[k])
        end
      end
    end)

    it("repeat for a seed and change with it", function()
      local again = metrics.rouge(preds, refs, { bootstrap = 1000, seed = 7 })
      local other = metrics.rouge(preds, refs, { bootstrap = 1000, seed = 8 })
      assert.equal(boot.rouge1.low.f, again.rouge1.low.f)
      assert.equal(boot.rougeL.high.p, again.rougeL.high.p)
      assert.are_not.equal(boot.rouge1.low.f, other.rouge1.low.f)
    end)

    it("collapse to the value when every row is the same", function()
      local r = metrics.rouge({ "a b c", "a b c" }, { "a b d", "a b d" }, { bootstrap = 50 })
      assert.equal(r.rouge1.f, r.rouge1.low.f)
      assert.equal(r.rouge1.f, r.rouge1.high.f)
      assert.is_true(close(r.rouge1.f, 100 * 2 / 3))
    end)
  end)

  it("rejects bad calls with messages that say what is wrong", function()
    local function rejects(fn, pattern)
      local ok, err = pcall(fn)
      assert.is_false(ok)
      assert.is_truthy(err:find(pattern, 1, true), ("%q should mention %q"):format(err, pattern))
    end
    rejects(function() metrics.rouge({ "a" }, { "a", "b" }) end, "1 predictions but 2 references")
    rejects(function() metrics.rouge({}, {}) end, "no predictions")
    rejects(function() metrics.rouge({ "a" }, { "a" }, { types = { "rougeX" } }) end, "unknown ROUGE type 'rougeX'")
    rejects(function() metrics.rouge({ "a" }, { "a" }, { stemm = true }) end, "unknown option 'stemm'")
    rejects(function() metrics.rouge({ "a", 3 }, { "a", "b" }) end, "predictions[2] is number")
    rejects(function() metrics.rouge({ "a" }, { "a" }, { bootstrap = 0.5 }) end, "bootstrap")
  end)
end)

describe("sentence splitter (rule-based, not punkt)", function()
  local cases = {
    { "One sentence. Another one! A third? Yes.", { "One sentence.", "Another one!", "A third?", "Yes." } },
    { "Mr. Smith met Dr. Jones at 5 p.m. on Jan. 5. They talked.",
      { "Mr. Smith met Dr. Jones at 5 p.m. on Jan. 5.", "They talked." } },
    { "The U.S. Army left. J. R. R. Tolkien wrote books.", { "The U.S. Army left.", "J. R. R. Tolkien wrote books." } },
    { 'He said "stop." Then he left.', { 'He said "stop."', "Then he left." } },
    { "It cost 3.5 million... and rose. Wait... What?", { "It cost 3.5 million... and rose.", "Wait...", "What?" } },
    { "Line one\nLine two\n\n  Line three  ", { "Line one", "Line two", "Line three" } },
    { "no terminal punctuation", { "no terminal punctuation" } },
    { "   ", {} },
    { "", {} },
    { "In 1990. and then", { "In 1990. and then" } },
    { "(Really?) Yes (it is).", { "(Really?)", "Yes (it is)." } },
  }
  for _, c in ipairs(cases) do
    it(("splits %q"):format(c[1]), function()
      assert.are.same(c[2], metrics.split_sentences(c[1]))
    end)
  end

  it("feeds rougeLsum when asked", function()
    local pred = "The cat sat. The dog ran away quickly."
    local ref = "The dog ran away. A cat sat down."
    local split = metrics.rouge({ pred }, { ref }, { split_sentences = true, types = { "rougeLsum" } })
    local joined = metrics.rouge({ table.concat(metrics.split_sentences(pred), "\n") },
      { table.concat(metrics.split_sentences(ref), "\n") }, { types = { "rougeLsum" } })
    local whole = metrics.rouge({ pred }, { ref }, { types = { "rougeLsum" } })
    assert.equal(joined.rougeLsum.f, split.rougeLsum.f)
    assert.are_not.equal(whole.rougeLsum.f, split.rougeLsum.f)
  end)
end)

describe("BLEU (sacreBLEU 2.6.0)", function()
  local fx = fixture("bleu_cases.lua")

  it("tokenizes as 13a", function()
    local failures = {}
    for i, c in ipairs(fx.tokenize) do
      local got = metrics.bleu_tokenize(c.text)
      if got ~= c.tokens then failures[#failures + 1] = ("%d %q: got %q, want %q"):format(i, c.text, got, c.tokens) end
    end
    expect_no_failures(failures, #fx.tokenize, "tokenizations")
  end)

  for _, corpus in ipairs(fx.corpora) do
    describe(corpus.name, function()
      local refs = #corpus.refs == 1 and corpus.refs[1] or corpus.refs
      local result = metrics.bleu(corpus.hyps, refs, { per_example = true })

      it("matches the corpus score and its signature", function()
        local want = corpus.corpus
        assert.is_true(close(result.score, want.score), ("score %.12f vs %.12f"):format(result.score, want.score))
        assert.is_true(close(result.bp, want.bp))
        for n = 1, 4 do
          assert.is_true(close(result.precisions[n], want.precisions[n]), "precision " .. n)
          assert.equal(want.counts[n], result.counts[n])
          assert.equal(want.totals[n], result.totals[n])
        end
        assert.equal(want.sys_len, result.sys_len)
        assert.equal(want.ref_len, result.ref_len)
        assert.equal(corpus.signature, result.signature)
        assert.equal(corpus.formatted, result.text)
      end)

      if corpus.stats then
        it("matches every segment's statistics and sentence BLEU", function()
          local failures = {}
          for i, st in ipairs(corpus.stats) do
            local got = result.per_example[i]
            local want = corpus.sentence[i]
            local mine = { got.sys_len, got.ref_len }
            for n = 1, 4 do mine[2 + n], mine[6 + n] = got.counts[n], got.totals[n] end
            if table.concat(mine, ",") ~= table.concat(st, ",") then
              failures[#failures + 1] = ("segment %d stats %s, sacreBLEU %s"):format(i, table.concat(mine, ","), table.concat(st, ","))
            elseif not close(got.score, want.score) or not close(got.bp, want.bp) then
              failures[#failures + 1] = ("segment %d score %.12f, sacreBLEU %.12f"):format(i, got.score, want.score)
            end
          end
          expect_no_failures(failures, #corpus.stats, "segments")
        end)
      end
    end)
  end

  it("rejects bad calls", function()
    local ok, err = pcall(metrics.bleu, { "a", "b" }, { "a" })
    assert.is_false(ok)
    assert.matches("2 hypotheses but reference stream 1 has 1 entries", err, 1, true)
    ok, err = pcall(metrics.bleu, { "a" }, { { false } })
    assert.is_false(ok)
    assert.matches("segment 0 has no reference", err, 1, true)
    ok, err = pcall(metrics.bleu, {}, {})
    assert.is_false(ok)
    assert.matches("no hypotheses", err, 1, true)
  end)
end)
