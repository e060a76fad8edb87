-- Every op rejects a bad call with a Lua error that names the op and
-- describes the tensors at fault; nothing aborts the process.
local dq = require("dqbart")
local rejects = require("expect_error").rejects

describe("op argument errors", function()
  local a, b = dq.zeros(2, 3), dq.zeros(4, 5)

  it("matmul: inner dims", function()
    rejects(function() dq.matmul(a, b) end, "dq_matmul", "[2, 3] f32 cpu", "[4, 5] f32 cpu", "inner dims")
  end)

  it("matmul: batch dims", function()
    rejects(function() dq.matmul(dq.zeros(2, 3, 4), dq.zeros(3, 4, 5)) end, "dq_matmul", "batch dims")
  end)

  it("matmul: beta without an allocated out", function()
    rejects(function() dq.matmul(a, dq.zeros(3, 2), { beta = 1 }) end, "dq_matmul", "beta")
  end)

  it("elementwise: shapes that do not broadcast", function()
    rejects(function() dq.add(a, b) end, "dq_add", "[2, 3]", "[4, 5]", "broadcast")
    rejects(function() dq.mul(dq.zeros(2, 3), dq.zeros(2)) end, "dq_mul", "broadcast")
  end)

  it("elementwise: dtype mismatch", function()
    rejects(function() dq.sub(a, dq.zeros({ 2, 3 }, { dtype = "i32" })) end, "dq_sub", "i32")
  end)

  it("CPU ops compute in f32", function()
    rejects(function() dq.gelu(dq.zeros({ 2 }, { dtype = "bf16" })) end, "dq_gelu", "bf16", "f32")
  end)

  it("an out of the wrong shape", function()
    rejects(function() dq.relu(a, dq.zeros(3, 2)) end, "dq_relu", "out is [3, 2] f32 cpu", "[2, 3]")
  end)

  it("backward: dy and x shapes differ", function()
    rejects(function() dq.gelu_backward(dq.zeros(2, 2), a) end, "dq_gelu_backward", "same shape")
  end)

  it("layernorm: weight of the wrong size, bad eps", function()
    rejects(function() dq.layernorm(a, dq.ones(4), dq.zeros(3)) end, "dq_layernorm", "weight", "[4]", "[3]")
    rejects(function() dq.layernorm(a, dq.ones(3), dq.zeros(3), { eps = 0 }) end, "dq_layernorm", "eps")
  end)

  it("layernorm_backward: statistics from another tensor", function()
    local _, mean, rstd = dq.layernorm(dq.zeros(5, 3), dq.ones(3), dq.zeros(3), { save = true })
    rejects(function() dq.layernorm_backward(a, a, dq.ones(3), mean, rstd) end, "dq_layernorm_backward", "mean")
  end)

  it("softmax: a mask that does not broadcast", function()
    rejects(function() dq.softmax(dq.zeros(2, 3, 4), { mask = dq.zeros(2, 2, 4) }) end, "dq_softmax", "mask",
      "[2, 2, 4]")
  end)

  it("dropout: probability out of range", function()
    rejects(function() dq.dropout(a, 1, { seed = 1 }) end, "dq_dropout", "probability")
  end)

  it("embedding: float ids, ids out of range", function()
    local w = dq.zeros(5, 4)
    rejects(function() dq.embedding(w, dq.zeros(3)) end, "dq_embedding", "ids", "i32 or i64")
    rejects(function() dq.embedding(w, dq.tensor({ 1, 5 }, { dtype = "i64" })) end, "dq_embedding", "5")
  end)

  it("reductions: unknown reduction, max of nothing", function()
    assert.has_error(function() dq.reduce(a, "median") end)
    rejects(function() dq.max(dq.zeros(0)) end, "dq_reduce_all", "empty")
  end)

  it("sum_leading: out that is not a suffix", function()
    rejects(function() dq.sum_leading(dq.zeros(2, 3), dq.zeros(2)) end, "dq_sum_leading", "trailing")
  end)

  it("tensors on different devices", function()
    if not dq.cuda_available() then
      pending("no CUDA device: the cross-device check needs one")
      return
    end
    rejects(function() dq.add(dq.zeros(2), dq.zeros({ 2 }, { device = "cuda" })) end, "dq_add", "different devices")
  end)
end)

describe("op outputs", function()
  it("an allocated out is reused in place (arena style)", function()
    local out = dq.zeros(2, 2)
    local ptr = out.data
    local r = dq.add(dq.ones(2, 2), dq.ones(2, 2), out)
    assert.equal(ptr, r.data)
    assert.same({ 2, 2, 2, 2 }, out:tolist())
  end)

  it("operators: + - * / and unary minus, with tensors and numbers", function()
    local x = dq.tensor({ 1, 2, 3 })
    assert.same({ 2, 4, 6 }, (x + x):tolist())
    assert.same({ 2, 3, 4 }, (x + 1):tolist())
    assert.same({ 0, -1, -2 }, (1 - x):tolist())
    assert.same({ 3, 6, 9 }, (x * 3):tolist())
    assert.same({ 1, 4, 9 }, (x * x):tolist())
    assert.same({ 0.5, 1, 1.5 }, (x / 2):tolist())
    assert.same({ -1, -2, -3 }, (-x):tolist())
  end)
end)
