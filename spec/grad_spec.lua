-- Finite-difference gradient checks of every core op's backward on CPU.
-- The backward of matmul and of broadcasting is composed from other ops
-- (matmul with transposes, sum_leading), exactly as the model code does.
local dq = require("dqbart")
local gradcheck = require("gradcheck")

local seed = 0
local function randn(...)
  seed = seed + 1
  local shape = type((...)) == "table" and (...) or { ... }
  return dq.randn(shape, { seed = 100 + seed })
end

-- Values bounded away from 0, for ops with a kink at 0 (relu, absmax).
local function away_from_zero(t)
  local signs = t:tolist()
  local vals = {}
  for i, v in ipairs(signs) do vals[i] = (v >= 0 and 1 or -1) * (0.2 + math.abs(v)) end
  return dq.tensor(vals):reshape(t:size())
end

describe("gradients (finite differences, CPU f32)", function()
  describe("matmul", function()
    for _, ta in ipairs({ false, true }) do
      for _, tb in ipairs({ false, true }) do
        it(("2-d, trans_a=%s trans_b=%s"):format(tostring(ta), tostring(tb)), function()
          local M, K, N = 3, 5, 4
          local a = randn(ta and { K, M } or { M, K })
          local b = randn(tb and { N, K } or { K, N })
          gradcheck.check{
            inputs = { a = a, b = b }, wrt = { "a", "b" },
            forward = function(i) return dq.matmul(i.a, i.b, { trans_a = ta, trans_b = tb }) end,
            backward = function(i, g)
              -- C = op(A) op(B): dop(A) = G op(B)^T, dop(B) = op(A)^T G
              local da = ta and dq.matmul(i.b, g, { trans_a = tb, trans_b = true })
                         or dq.matmul(g, i.b, { trans_b = not tb })
              local db = tb and dq.matmul(g, i.a, { trans_a = true, trans_b = ta })
                         or dq.matmul(i.a, g, { trans_a = not ta })
              return { a = da, b = db }
            end,
          }
        end)
      end
    end

    it("batched a with a shared 2-d b (a linear layer)", function()
      local x, w = randn(2, 3, 5), randn(4, 5)
      gradcheck.check{
        inputs = { x = x, w = w }, wrt = { "x", "w" },
        forward = function(i) return dq.matmul(i.x, i.w, { trans_b = true }) end,
        backward = function(i, g)
          local dw = dq.matmul(g:reshape(-1, 4), i.x:reshape(-1, 5), { trans_a = true })
          return { x = dq.matmul(g, i.w), w = dw }
        end,
      }
    end)

    it("batched a and b", function()
      local a, b = randn(2, 3, 4), randn(2, 4, 5)
      gradcheck.check{
        inputs = { a = a, b = b }, wrt = { "a", "b" },
        forward = function(i) return dq.matmul(i.a, i.b) end,
        backward = function(i, g)
          return { a = dq.matmul(g, i.b, { trans_b = true }), b = dq.matmul(i.a, g, { trans_a = true }) }
        end,
      }
    end)

    it("alpha and beta", function()
      local a, b, c = randn(3, 4), randn(4, 2), randn(3, 2)
      gradcheck.check{
        inputs = { a = a, b = b, c = c }, wrt = { "a", "c" },
        forward = function(i)
          local out = i.c:clone()
          return dq.matmul(i.a, i.b, { alpha = 0.5, beta = 2, out = out })
        end,
        backward = function(i, g)
          return { a = dq.matmul(g, i.b, { trans_b = true, alpha = 0.5 }), c = dq.scale(g, 2) }
        end,
      }
    end)
  end)

  describe("elementwise with suffix broadcasting", function()
    local function broadcast_grad(g, like)
      if g.numel == like.numel then return g end
      local out = dq.zeros(like:size())
      return dq.sum_leading(g, out)
    end
    for _, case in ipairs({
      { name = "add", fn = dq.add, da = function(g) return g end, db = function(g) return g end },
      { name = "sub", fn = dq.sub, da = function(g) return g end, db = function(g) return dq.scale(g, -1) end },
      { name = "mul", fn = dq.mul, da = function(g, i) return dq.mul(g, i.b) end,
        db = function(g, i) return dq.mul(g, i.a) end },
    }) do
      for _, shapes in ipairs({ { { 2, 3, 4 }, { 2, 3, 4 } }, { { 2, 3, 4 }, { 4 } }, { { 3 }, { 2, 3 } },
                                { { 2, 3, 4 }, { 1, 3, 4 } } }) do
        it(("%s %s with %s"):format(case.name, table.concat(shapes[1], "x"), table.concat(shapes[2], "x")), function()
          local a, b = randn(shapes[1]), randn(shapes[2])
          gradcheck.check{
            inputs = { a = a, b = b }, wrt = { "a", "b" },
            forward = function(i) return case.fn(i.a, i.b) end,
            backward = function(i, g)
              -- the gradient of the smaller operand sums over broadcast dims
              local full = dq.add(dq.zeros(g:size()), g)
              local function expand(t) return t.numel == g.numel and t or dq.add(dq.zeros(g:size()), t) end
              local ga = case.da(full, { a = expand(i.a), b = expand(i.b) })
              local gb = case.db(full, { a = expand(i.a), b = expand(i.b) })
              return { a = broadcast_grad(ga, i.a), b = broadcast_grad(gb, i.b) }
            end,
          }
        end)
      end
    end

    it("scale", function()
      gradcheck.check{
        inputs = { x = randn(3, 4) }, wrt = { "x" },
        forward = function(i) return dq.scale(i.x, -1.5) end,
        backward = function(_, g) return { x = dq.scale(g, -1.5) } end,
      }
    end)

    it("axpby", function()
      local y0 = randn(3, 4)
      gradcheck.check{
        inputs = { x = randn(3, 4), y = y0 }, wrt = { "x", "y" },
        forward = function(i) return dq.axpby(i.y:clone(), i.x, 0.5, -2) end,
        backward = function(_, g) return { x = dq.scale(g, 0.5), y = dq.scale(g, -2) } end,
      }
    end)

    it("sum_leading", function()
      gradcheck.check{
        inputs = { x = randn(2, 3, 4) }, wrt = { "x" },
        forward = function(i) return dq.sum_leading(i.x, dq.zeros(3, 4)) end,
        backward = function(i, g) return { x = dq.add(dq.zeros(i.x:size()), g) } end,
      }
    end)
  end)

  describe("activations", function()
    it("gelu (erf form)", function()
      gradcheck.check{
        inputs = { x = dq.scale(randn(4, 7), 2) }, wrt = { "x" },
        forward = function(i) return dq.gelu(i.x) end,
        backward = function(i, g) return { x = dq.gelu_backward(g, i.x) } end,
      }
    end)

    it("relu", function()
      gradcheck.check{
        inputs = { x = away_from_zero(randn(4, 7)) }, wrt = { "x" },
        forward = function(i) return dq.relu(i.x) end,
        backward = function(i, g) return { x = dq.relu_backward(g, i.x) } end,
      }
    end)
  end)

  it("layernorm: x, weight and bias", function()
    local x, w, b = randn(3, 2, 9), randn(9), randn(9)
    gradcheck.check{
      inputs = { x = x, w = w, b = b }, wrt = { "x", "w", "b" },
      forward = function(i) return dq.layernorm(i.x, i.w, i.b, { eps = 1e-5 }) end,
      backward = function(i, g)
        local _, mean, rstd = dq.layernorm(i.x, i.w, i.b, { eps = 1e-5, save = true })
        local dx, dw, db = dq.layernorm_backward(g, i.x, i.w, mean, rstd)
        return { x = dx, w = dw, b = db }
      end,
    }
  end)

  describe("softmax", function()
    it("with a scale", function()
      gradcheck.check{
        inputs = { x = randn(3, 4, 6) }, wrt = { "x" },
        forward = function(i) return dq.softmax(i.x, { scale = 0.7 }) end,
        backward = function(i, g)
          local y = dq.softmax(i.x, { scale = 0.7 })
          return { x = dq.softmax_backward(g, y, { scale = 0.7 }) }
        end,
      }
    end)

    it("with a broadcast padding mask", function()
      -- [B, 1, 1, S] mask over [B, H, T, S] scores, one padded key per batch
      local mask = dq.tensor({ { { { 0, 0, 0, -math.huge } } }, { { { 0, 0, -1e9, -1e9 } } } })
      gradcheck.check{
        inputs = { x = randn(2, 3, 2, 4) }, wrt = { "x" },
        forward = function(i) return dq.softmax(i.x, { mask = mask }) end,
        backward = function(i, g)
          local y = dq.softmax(i.x, { mask = mask })
          return { x = dq.softmax_backward(g, y) }
        end,
      }
    end)
  end)

  it("dropout (same mask in forward and backward)", function()
    gradcheck.check{
      inputs = { x = randn(5, 8) }, wrt = { "x" },
      forward = function(i) return dq.dropout(i.x, 0.3, { seed = 9, offset = 4 }) end,
      backward = function(_, g) return { x = dq.dropout_backward(g, 0.3, { seed = 9, offset = 4 }) } end,
    }
  end)

  it("embedding: scatter-add into the weight, repeated ids included", function()
    local ids = dq.tensor({ { 1, 4, 1 }, { 0, 2, 4 } }, { dtype = "i64" })
    gradcheck.check{
      inputs = { w = randn(5, 3) }, wrt = { "w" },
      forward = function(i) return dq.embedding(i.w, ids) end,
      backward = function(i, g) return { w = dq.embedding_backward(dq.zeros(i.w:size()), g, ids) } end,
    }
  end)

  describe("reductions", function()
    for _, name in ipairs({ "sum", "mean", "max", "absmax" }) do
      for _, rows in ipairs({ false, true }) do
        it(("%s over %s"):format(name, rows and "rows" or "everything"), function()
          gradcheck.check{
            inputs = { x = away_from_zero(randn(3, 5)) }, wrt = { "x" },
            forward = function(i) return dq.reduce(i.x, name, rows) end,
            backward = function(i, g)
              local out = dq.reduce(i.x, name, rows)
              return { x = dq.reduce_backward(g, i.x, out, name, rows) }
            end,
          }
        end)
      end
    end
  end)
end)
