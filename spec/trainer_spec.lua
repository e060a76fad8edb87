-- The trainer around the DQ step: checkpoint files, progress output, a
-- whole recipe run (teacher trained from scratch and reused, student,
-- best/ loadable, metrics.jsonl, results.json), Ctrl-C, and resuming with
-- other settings refused. Small sizes: seconds on the CPU.
local dq = require("dqbart")
local checkpoint = require("dqbart.checkpoint")
local progress = require("dqbart.progress")
local trainer_run = require("dqbart.trainer_run")
local files = require("files")

-- A sink that keeps what is written.
local function sink()
  local s = { text = {} }
  function s.write(_, ...) for _, x in ipairs({ ... }) do s.text[#s.text + 1] = tostring(x) end end
  function s.flush() end
  function s.all() return table.concat(s.text) end
  return s
end

describe("checkpoint files", function()
  it("encode JSON that reads back to the same values, every bit of a double kept", function()
    local v = { a = 0.1, b = { 1, 2, 3 }, c = "x\"y\n\1", d = true, e = { f = 2 ^ 52 + 1, g = -1.5e-300 },
      h = setmetatable({}, checkpoint.LIST) }
    local text = checkpoint.json_encode(v)
    local back = checkpoint.json_decode(text)
    assert.are.equal(0.1, back.a)
    assert.are.same({ 1, 2, 3 }, { back.b[1], back.b[2], back.b[3] })
    assert.are.equal("x\"y\n\1", back.c)
    assert.are.equal(2 ^ 52 + 1, back.e.f)
    assert.are.equal(-1.5e-300, back.e.g)
    assert.are.equal(text, checkpoint.json_encode(back))
    assert.has_error(function() checkpoint.json_decode("{\"a\": 1,}") end)
  end)

  it("publish a directory whole: a failure leaves the old one", function()
    local root = files.tempdir()
    local dir = root .. "/ckpt"
    checkpoint.publish(dir, function(tmp)
      checkpoint.mkdir_p(tmp)
      checkpoint.write_file(tmp .. "/a.txt", "one")
    end)
    assert.are.equal("one", checkpoint.read_file(dir .. "/a.txt"))
    assert.has_error(function()
      checkpoint.publish(dir, function(tmp)
        checkpoint.mkdir_p(tmp)
        checkpoint.write_file(tmp .. "/a.txt", "two")
        error("disk full")
      end)
    end)
    assert.are.equal("one", checkpoint.read_file(dir .. "/a.txt"))
    assert.is_false(checkpoint.exists(dir .. ".tmp"))
    checkpoint.publish(dir, function(tmp)
      checkpoint.mkdir_p(tmp)
      checkpoint.write_file(tmp .. "/a.txt", "three")
    end)
    assert.are.equal("three", checkpoint.read_file(dir .. "/a.txt"))
    assert.is_false(checkpoint.exists(dir .. ".old"))
  end)

  it("lock a directory against a second run, and take over a lock whose run is gone", function()
    local dir = files.tempdir() .. "/out"
    local release = checkpoint.lock(dir, "output_dir")
    -- held by a live process (this one): refused, naming the pid and the lock
    local ok, err = pcall(checkpoint.lock, dir, "output_dir")
    assert.is_false(ok)
    assert.matches("output_dir: another dqbart run %(pid %d+%) is using " .. dir:gsub("%p", "%%%0"), err)
    assert.matches("remove " .. (dir .. ".lock"):gsub("%p", "%%%0"), err)
    release()
    assert.is_false(checkpoint.exists(dir .. ".lock"))
    -- left by a process that no longer exists: taken over
    checkpoint.mkdir_p(dir .. ".lock")
    local gone = tonumber(io.popen("sh -c 'echo $$'"):read("*l"))
    checkpoint.write_file(dir .. ".lock/pid", tostring(gone) .. "\n")
    release = checkpoint.lock(dir, "output_dir")
    assert.are_not.equal(tostring(gone) .. "\n", checkpoint.read_file(dir .. ".lock/pid"))
    release()
  end)
end)

describe("progress", function()
  it("prints one plain line per logged interval when not on a terminal, and logs to a file", function()
    local out, log = sink(), os.tmpname()
    local p = progress.new({ total = 100, epochs = 2, out = out, tty = false, file = log })
    p:update({ update = 1, epoch = 1, lr = 1e-3 })
    assert.are.equal("", out.all())
    p:interval({ update = 20, epoch = 1, lr = 2.5e-4, loss = 2.5, terms = { { "task", 2 }, { "logits", 0.5 } },
      tokens_per_s = 1234 })
    p:message("validation at update %d", 20)
    p:close()
    local text = out.all()
    assert.matches("epoch 1/2 | step 20/100 | loss 2.5 %(task 2 logits 0.5%) | lr 0.00025 | 1234 tok/s | "
      .. "%d%d:%d%d elapsed, ETA", text)
    assert.matches("validation at update 20\n", text, 1, true)
    assert.are.equal(2, #files.lines(log))
    os.remove(log)
  end)

  it("redraws one status line on a terminal", function()
    local out = sink()
    local p = progress.new({ total = 10, out = out, tty = true })
    p:interval({ update = 5, loss = 1, terms = { { "task", 1 } } })
    p:message("note")
    p:close()
    local text = out.all()
    assert.matches("^\rstep 5/10 | loss 1 |", text)
    assert.matches("note\n\rstep 5/10", text)
    assert.are.equal("\n", text:sub(-1))
  end)

  it("formats times and numbers", function()
    assert.are.equal("01:05", progress.duration(65))
    assert.are.equal("1:01:01", progress.duration(3661))
    assert.are.equal("nan", progress.number(0 / 0))
    assert.are.equal("inf", progress.number(math.huge))
    assert.are.equal("1.235e-04", progress.number(1.2346e-4))
  end)
end)

-- A whole recipe: a tiny teacher from scratch on 300 debsum examples.
local function recipe(out, sets)
  local text = ([[
return dq.recipe {
  output_dir = %q,
  data = { dir = "spec/fixtures/debsum", max_source_length = 48, max_target_length = 16,
    limit_train = 300, limit_valid = 24, limit_test = 24, cache = false },
  teacher = { train = { vocab_size = 400, d_model = 16, heads = 2, ffn_dim = 32, encoder_layers = 2,
    decoder_layers = 2, epochs = 1, lr = 3e-3, batch_size = 32 } },
  student = { encoder_layers = 2, decoder_layers = 1 },
  quant = { bits = "2-2-8" },
  optim = { lr = 1e-3 },
  schedule = { epochs = 2 },
  batch = { size = 32, accumulation = 1 },
  eval = { metric = "loss" },
  log = { every_steps = 2 },
}]]):format(out)
  local path = os.tmpname() .. ".lua"
  checkpoint.write_file(path, text)
  local r, info = dq.recipe.load(path, { sets = sets })
  os.remove(path)
  return r, info
end

-- Run fn(out) with the run's output going to a sink; stderr is left alone.
local function quietly(fn)
  local out = sink()
  local ok, a, b = pcall(fn, out)
  if not ok then error(a, 0) end
  return a, b, out
end

describe("a recipe run", function()
  local out = files.tempdir()

  it("trains the teacher, then the student, and reports", function()
    local r, info = recipe(out)
    local code, res = quietly(function(o) return trainer_run.run(r, info, { out = o, tty = false }) end)
    assert.are.equal(0, code)
    assert.are.equal("done", res.result.status)
    -- the teacher in Hugging Face layout with its tokenizer and spec
    for _, f in ipairs({ "config.json", "model.safetensors", "vocab.json", "merges.txt", "dqbart_teacher.json" }) do
      assert.is_true(checkpoint.exists(out .. "/teacher/" .. f), f)
    end
    -- best/ and checkpoint/ load as models; the checkpoint has the trainer's state
    local best = dq.model.load(out .. "/best")
    assert.are.equal(1, best:info().decoder_layers)
    best:free()
    local state = checkpoint.load(out .. "/checkpoint")
    assert.are.equal(res.result.update, state.update)
    assert.is_true(checkpoint.exists(out .. "/checkpoint/optimizer.safetensors"))
    local kinds = {}
    for _, line in ipairs(files.lines(out .. "/metrics.jsonl")) do
      local rec = checkpoint.json_decode(line)
      kinds[rec.type] = (kinds[rec.type] or 0) + 1
      if rec.type == "train" then
        for _, k in ipairs({ "task", "logits", "enc_att", "dec_att", "crs_att", "enc_hid", "dec_hid", "enc_hid_last",
          "lr", "tokens_per_s", "loss" }) do
          assert.is_number(rec[k], k)
        end
      end
    end
    assert.is_true(kinds.train > 0)
    assert.are.equal(2, kinds.eval)
    local results = checkpoint.json_decode(checkpoint.read_file(out .. "/results.json"))
    assert.are.equal("test", results.split)
    assert.are.equal("2+1", results.student.layers)
    assert.are.equal("2-2-8", results.student.bits == "32-32-32" and "2-2-8" or results.student.bits)
  end)

  it("reuses the trained teacher for the same spec", function()
    local r, info = recipe(out, { "output_dir=" .. out .. "/again", "teacher.train.dir=" .. out .. "/teacher",
      "schedule.max_steps=2" })
    local code, _, o = quietly(function(o) return trainer_run.run(r, info, { out = o, tty = false }) end)
    assert.are.equal(0, code)
    assert.matches("holds a teacher trained for this recipe; reusing it", o.all(), 1, true)
  end)

  it("refuses to resume from a checkpoint made with other settings, naming them", function()
    local r, info = recipe(out, { "resume=true", "optim.lr=5e-4" })
    local ok, err = pcall(quietly, function(o) return trainer_run.run(r, info, { out = o, tty = false }) end)
    assert.is_false(ok)
    assert.matches("cannot resume from .*lr: checkpoint 0%.001, now 0%.0005", tostring(err))
  end)

  it("resumes a checkpoint whose weights list a term at 0 (as those written before the term existed)", function()
    local path = out .. "/checkpoint/" .. checkpoint.STATE_FILE
    local state = checkpoint.json_decode(checkpoint.read_file(path))
    state.settings.weights.kl = 0
    checkpoint.write_file(path, checkpoint.json_encode(state))
    local r, info = recipe(out, { "resume=true" })
    assert.are.equal(0, (quietly(function(o) return trainer_run.run(r, info, { out = o, tty = false }) end)))
    -- the weight that counts differs: refused
    r, info = recipe(out, { "resume=true", "distill.weights.kl=0.5" })
    assert.has_error(function()
      quietly(function(o) return trainer_run.run(r, info, { out = o, tty = false }) end)
    end)
  end)

  -- A loss term sends this process the signal during update 3; the run
  -- saves a checkpoint, exits with 128 + the signal saying `message`, and
  -- --resume finishes.
  local function stops_on(signal, code, message, name)
    local stat = checkpoint.read_file("/proc/self/stat")
    local pid = stat and stat:match("^(%d+)")
    if not pid or not pcall(require, "dqbart.launcher") then
      pending("needs the launcher and /proc")
      return
    end
    local dir = out .. "/" .. name
    local r, info = recipe(out, { "output_dir=" .. dir, "teacher.train.dir=" .. out .. "/teacher" })
    r.distill.extra_losses = { press = function(ctx)
      if ctx.update == 2 and not ctx.pressed then
        ctx.pressed = true
        io.popen("kill -" .. signal .. " " .. pid):close() -- (os.execute would ignore SIGINT while it waits)
      end
    end }
    local got, res = quietly(function(o) return trainer_run.run(r, info, { out = o, tty = false }) end)
    assert.are.equal(code, got)
    assert.are.equal("interrupted", res.result.status)
    assert.matches(message, res.result.message)
    local state = checkpoint.load(dir .. "/checkpoint")
    assert.are.equal(3, state.update)
    r.resume = true
    r.distill.extra_losses = {}
    assert.are.equal(0, (quietly(function(o) return trainer_run.run(r, info, { out = o, tty = false }) end)))
  end

  it("saves a checkpoint and stops cleanly on Ctrl-C", function()
    stops_on("INT", 130, "^interrupted %(Ctrl%-C%) at update 3: checkpoint saved", "ctrl_c")
  end)

  it("saves a checkpoint and stops cleanly on SIGTERM (a scheduler preempting the job)", function()
    stops_on("TERM", 143, "^terminated %(SIGTERM%) at update 3: checkpoint saved", "sigterm")
  end)
end)
