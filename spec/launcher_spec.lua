-- The dqbart launcher: scripts, -e, --version, --help, unknown subcommands,
-- and the REPL driven through a pipe.
local files = require("files")
local run = require("launcher").run -- dqbart ARGS [stdin] -> stdout and stderr, exit code

describe("the dqbart launcher", function()
  it("--version names the version and the CUDA build", function()
    local out, code = run("--version")
    assert.equal(0, code)
    assert.matches("^dqbart %d+%.%d+%.%d+ %(", out)
  end)

  it("--help lists the usage", function()
    local out, code = run("--help")
    assert.equal(0, code)
    assert.matches("usage: dqbart", out)
    assert.matches("%-e CODE", out)
  end)

  it("an unknown subcommand prints help and exits 2", function()
    local out, code = run("frobnicate")
    assert.equal(2, code)
    assert.matches("unknown subcommand or file 'frobnicate'", out)
    assert.matches("usage: dqbart", out)
  end)

  it("-e runs a chunk with dq loaded", function()
    local out, code = run([[-e 'print(dq.zeros(2, 3):nelement())']])
    assert.equal(0, code)
    assert.equal("6\n", out)
  end)

  it("runs a Lua file with arg set", function()
    local path = files.write(os.tmpname() .. ".lua", "print(arg[0] ~= nil, arg[1], arg[2], #arg, dq ~= nil)\n")
    local out, code = run(path .. " one two")
    os.remove(path)
    assert.equal(0, code)
    assert.equal("true\tone\ttwo\t2\ttrue\n", out)
  end)

  it("a failing script exits 1 with its message", function()
    local out, code = run([[-e 'error("boom")']])
    assert.equal(1, code)
    assert.matches("boom", out)
  end)

  it("the REPL prints values, continues multi-line statements and survives errors", function()
    local out, code = run("", table.concat({
      "=1 + 2",
      "x = dq.tensor({1, 2})",
      "x * 2",
      "for i = 1, 2 do",
      "  print('line', i)",
      "end",
      "error('oops')",
      "print('still here')",
    }, "\n") .. "\n")
    assert.equal(0, code)
    assert.matches("^3\n", out)
    assert.matches("tensor%(%[2%., 4%.%], f32, cpu%)", out)
    assert.matches("line\t1\nline\t2", out)
    assert.matches("oops", out)
    assert.matches("still here", out)
  end)
end)
