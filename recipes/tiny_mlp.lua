-- tiny_mlp.lua: the engine's ops at work, without the model or the trainer.
-- A two-layer GELU network with LayerNorm learns y = sin(3 x1) + x2^2 by
-- gradient descent, with every backward written by hand, on the CPU or
-- (dqbart recipes/tiny_mlp.lua cuda) on the GPU. It prints the loss falling.
local device = arg[1] or "cpu"
local dtype = "f32"
local n, d_in, d_hidden, steps, lr = 256, 2, 64, 300, 0.05

local function randn(shape, seed, scale)
  return dq.scale(dq.randn(shape, { seed = seed }), scale):to(dtype, device)
end

-- data
local x = dq.rand({ n, d_in }, { seed = 1 })
local xs = x:tolist()
local ys = {}
for i = 1, n do ys[i] = { math.sin(3 * xs[2 * i - 1]) + xs[2 * i] ^ 2 } end
x = (x * 2 - 1):to(device)
local y = dq.tensor(ys, { device = device })

-- parameters
local w1, b1 = randn({ d_hidden, d_in }, 2, 0.7), dq.zeros({ d_hidden }, { device = device })
local g, beta = dq.ones({ d_hidden }, { device = device }), dq.zeros({ d_hidden }, { device = device })
local w2, b2 = randn({ 1, d_hidden }, 3, 0.1), dq.zeros({ 1 }, { device = device })
local params = { w1, b1, g, beta, w2, b2 }

for step = 1, steps do
  -- forward: h = gelu(LN(x W1^T + b1)); p = h W2^T + b2
  local a = dq.matmul(x, w1, { trans_b = true }) + b1
  local ln, mean, rstd = dq.layernorm(a, g, beta, { save = true })
  local h = dq.gelu(ln)
  local p = dq.matmul(h, w2, { trans_b = true }) + b2
  local diff = p - y
  local loss = dq.mean(diff * diff):item()
  -- backward of the mean squared error, layer by layer
  local dp = diff * (2 / n)
  local dw2 = dq.matmul(dp, h, { trans_a = true })
  local db2 = dq.sum_leading(dp, dq.zeros({ 1 }, { device = device }))
  local dh = dq.matmul(dp, w2)
  local dln = dq.gelu_backward(dh, ln)
  local da, dg, dbeta = dq.layernorm_backward(dln, a, g, mean, rstd)
  local dw1 = dq.matmul(da, x, { trans_a = true })
  local db1 = dq.sum_leading(da, dq.zeros({ d_hidden }, { device = device }))
  for i, grad in ipairs({ dw1, db1, dg, dbeta, dw2, db2 }) do dq.axpby(params[i], grad, -lr, 1) end
  if step == 1 or step % 50 == 0 then print(("step %4d  loss %.5f"):format(step, loss)) end
end
