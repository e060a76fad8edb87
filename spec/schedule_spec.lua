-- dq.schedule: the learning-rate multipliers of transformers' schedulers
-- (recorded by spec/fixtures/make_optim_fixtures.py), warmup rounding, and
-- the step arithmetic of the reference and of transformers' Trainer.
local schedule = require("dqbart.schedule")

local HERE = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "spec"
local FIXTURE = dofile(HERE .. "/fixtures/optim/adamw_expected.lua")

describe("dq.schedule factors", function()
  for _, rec in ipairs(FIXTURE.schedules) do
    it(("match transformers' %s schedule, warmup %d of %d"):format(rec.kind, rec.warmup, rec.total), function()
      local s = schedule.new({ kind = rec.kind, lr = 2, total_steps = rec.total, warmup_steps = rec.warmup })
      for k, expected in ipairs(rec.values) do
        local got = s:factor(k - 1)
        assert.is_true(math.abs(got - expected) <= 1e-15, ("%s step %d: %.17g vs %.17g"):format(rec.kind, k - 1, got,
          expected))
        assert.is_true(math.abs(s:lr(k - 1) - 2 * expected) <= 2e-15)
      end
    end)
  end

  it("starts at lr 0 with warmup (the first update is k = 0) and at the peak without", function()
    assert.are.equal(0, schedule.new({ lr = 1, total_steps = 100, warmup_ratio = 0.05 }):lr(0))
    assert.are.equal(1, schedule.new({ lr = 1, total_steps = 100, warmup_ratio = 0 }):lr(0))
  end)
end)

describe("dq.schedule step arithmetic", function()
  it("rounds warmup down as the reference does and up as the Trainer does", function()
    assert.are.equal(12, schedule.warmup_steps(250, 0.05))
    assert.are.equal(12, schedule.warmup_steps(250, 0.05, "floor"))
    assert.are.equal(13, schedule.warmup_steps(250, 0.05, "ceil"))
    assert.are.equal(5, schedule.warmup_steps(100, 0.05, "ceil"))
    assert.are.equal(12, schedule.new({ lr = 1, total_steps = 250, warmup_ratio = 0.05 }).warmup_steps)
    assert.are.equal(13, schedule.new({ lr = 1, total_steps = 250, warmup_ratio = 0.05, warmup_rounding = "ceil" })
      .warmup_steps)
  end)

  it("counts updates per epoch with the last partial accumulation included", function()
    -- XSUM's 204045 training examples at 8 x 2: 25506 batches, 12753 updates.
    assert.are.equal(12753, schedule.steps_per_epoch({ examples = 204045, batch_size = 8, accumulation = 2 }))
    assert.are.equal(4, schedule.steps_per_epoch({ examples = 7, batch_size = 1, accumulation = 2 }))
    assert.are.equal(3, schedule.steps_per_epoch({ examples = 6, batch_size = 1, accumulation = 2 }))
    assert.are.equal(1, schedule.steps_per_epoch({ examples = 3, batch_size = 8, accumulation = 2 }))
    assert.are.equal(0, schedule.steps_per_epoch({ examples = 0, batch_size = 8 }))
    assert.are.equal(5, schedule.steps_per_epoch({ batches = 9, accumulation = 2 }))
    -- Two ranks split 25506 batches into 12753 each.
    assert.are.equal(6377, schedule.steps_per_epoch({ examples = 204045, batch_size = 8, accumulation = 2,
      world_size = 2 }))
  end)

  it("totals epochs x updates, or max_steps", function()
    assert.are.equal(255060, schedule.total_steps({ epochs = 20, steps_per_epoch = 12753 }))
    assert.are.equal(15, schedule.total_steps({ epochs = 1.5, steps_per_epoch = 10 }))
    assert.are.equal(7, schedule.total_steps({ epochs = 20, steps_per_epoch = 10, max_steps = 7 }))
  end)

  it("rejects bad arguments with messages that name them", function()
    assert.has_error(function() schedule.new({ kind = "poly", lr = 1, total_steps = 1 }) end,
      "schedule.new: kind must be one of linear, cosine, constant, got poly")
    assert.has_error(function() schedule.warmup_steps(10, 1.5) end,
      "schedule.warmup_steps: the ratio must be a number in [0, 1], got 1.5")
    assert.has_error(function() schedule.steps_per_epoch({ examples = 10, batch_size = 0 }) end,
      "schedule.steps_per_epoch: batch_size must be a positive integer, got 0")
  end)
end)
