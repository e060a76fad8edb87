-- The model's masks are per forward: a batch without attention masks after
-- a padded one must see no padding (the arena keeps the old mask buffer).
local dq = require("dqbart")

describe("model masks across forwards", function()
  it("an unpadded forward after a padded one equals a fresh unpadded forward", function()
    local dir = "spec/fixtures/bart/bart"
    local ids = dq.tensor({ { 0, 5, 9, 12, 2 }, { 0, 7, 2, 1, 1 } }, { dtype = "i64" })
    local pad = dq.tensor({ { 1, 1, 1, 1, 1 }, { 1, 1, 1, 0, 0 } }, { dtype = "i64" })
    local dec = dq.tensor({ { 2, 0, 5 }, { 2, 0, 7 } }, { dtype = "i64" })

    local fresh = dq.model.load(dir)
    fresh:forward{ input_ids = ids, decoder_input_ids = dec }
    local want = fresh:output("logits"):tolist()

    local reused = dq.model.load(dir)
    reused:forward{ input_ids = ids, attention_mask = pad, decoder_input_ids = dec }
    local padded = reused:output("logits"):tolist()
    reused:forward{ input_ids = ids, decoder_input_ids = dec }
    local got = reused:output("logits"):tolist()

    assert.same(want, got)
    assert.are_not.same(want, padded) -- the padded batch really differed
  end)
end)
