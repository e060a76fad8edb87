-- dq.safetensors: reading files and sharded checkpoints written by the
-- safetensors library (spec/fixtures/make_safetensors_fixtures.py), writing
-- byte-identical files, and a clear error for every malformed input.
local dq = require("dqbart")
local ffi = require("ffi")
local files = require("files")
local rejects = require("expect_error").rejects

local FIX = "spec/fixtures/safetensors/"
local expected = dofile(FIX .. "expected.lua")

-- ---- helpers --------------------------------------------------------------------------

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  return keys
end

-- 8-byte little-endian length (below 2^53).
local function u64le(n)
  local bytes = {}
  for i = 1, 8 do
    bytes[i] = string.char(n % 256)
    n = math.floor(n / 256)
  end
  return table.concat(bytes)
end

local function st_bytes(header, data)
  return u64le(#header) .. header .. (data or "")
end

local engine_dtype = { F32 = "f32", BF16 = "bf16", F16 = "f16", I8 = "i8", I32 = "i32", I64 = "i64", BOOL = "i8",
  U8 = "i32" }

local function assert_values(t, e, name)
  assert.are.same(e.shape, t:size(), name .. " shape")
  local got = t:tolist()
  assert.are.equal(#e.values, #got, name .. " element count")
  for i = 1, #got do
    assert.are.equal(e.values[i], got[i], ("%s element %d"):format(name, i))
  end
end

-- ---- reading ----------------------------------------------------------------------------

describe("safetensors reading", function()
  local multi = expected.multi

  it("lists sorted names, file dtypes, engine dtypes, shapes and metadata", function()
    local f = dq.safetensors.open(FIX .. "multi.safetensors")
    assert.are.same(sorted_keys(multi.tensors), f:names())
    for name, e in pairs(multi.tensors) do
      local info = f:info(name)
      assert.are.equal(e.dtype, info.file_dtype, name)
      assert.are.equal(engine_dtype[e.dtype], info.dtype, name)
      assert.are.same(e.shape, info.shape, name)
      assert.is_true(f:contains(name))
    end
    assert.is_false(f:contains("nope"))
    assert.are.same(multi.metadata, f:metadata())
    assert.are.equal(1, f:file_count())
    f:close()
  end)

  it("reads the values of every dtype exactly (BOOL as i8, U8 as i32)", function()
    local f = dq.safetensors.open(FIX .. "multi.safetensors")
    for name, e in pairs(multi.tensors) do
      if engine_dtype[e.dtype] then
        local t = f:tensor(name)
        assert.are.equal(engine_dtype[e.dtype], t:type(), name)
        assert.is_false(t:is_cuda())
        assert_values(t, e, name)
        t:free()
      end
    end
    f:close()
  end)

  it("gives 0-d and empty tensors their shapes", function()
    local f = dq.safetensors.open(FIX .. "multi.safetensors")
    local s = f:tensor("scalar")
    assert.are.equal(0, s:dim())
    assert.are.equal(3.5, s:item())
    local e = f:tensor("empty")
    assert.are.same({ 0, 4 }, e:size())
    assert.are.equal(0, e:nelement())
    f:close()
  end)

  it("returns zero-copy views that outlive the file object and never write the file", function()
    local f = dq.safetensors.open(FIX .. "multi.safetensors")
    local a, b = f:tensor("f32.matrix"), f:tensor("f32.matrix")
    assert.are.equal(ffi.cast("uintptr_t", a.data), ffi.cast("uintptr_t", b.data))
    f:close()
    assert.has_error(function() f:names() end)
    assert_values(a, multi.tensors["f32.matrix"], "after close")
    a:fill_(0) -- copy-on-write: this process's pages only
    assert.are.same({ 0, 0, 0, 0, 0, 0 }, b:tolist())
    a:free()
    b:free()
    local again = dq.safetensors.open(FIX .. "multi.safetensors")
    assert_values(again:tensor("f32.matrix"), multi.tensors["f32.matrix"], "file unchanged")
    again:close()
  end)

  it("copies into a defined tensor, converting dtype, and checks its shape", function()
    local f = dq.safetensors.open(FIX .. "multi.safetensors")
    local out = dq.zeros(5)
    assert.are.equal(out, f:tensor("bf16.vector", out))
    assert_values(out, multi.tensors["bf16.vector"], "bf16 into f32")
    local ids = dq.zeros({ 5 }, { dtype = "i64" })
    f:tensor("u8.bytes", ids)
    assert_values(ids, multi.tensors["u8.bytes"], "u8 into i64")
    rejects(function() f:tensor("bf16.vector", dq.zeros(2, 3)) end, "dq_safetensors_tensor", "bf16.vector",
      "[5] BF16", "destination is [2, 3] f32 cpu")
    f:close()
  end)

  it("describes a dtype it cannot load and refuses to load it", function()
    local f = dq.safetensors.open(FIX .. "multi.safetensors")
    local info = f:info("f64.refused")
    assert.is_nil(info.dtype)
    assert.are.equal("F64", info.file_dtype)
    rejects(function() f:tensor("f64.refused") end, "multi.safetensors", "f64.refused", "dtype F64")
    rejects(function() f:tensor("missing.weight") end, "no tensor named \"missing.weight\"", "multi.safetensors")
    f:close()
  end)

  it("reads a sharded checkpoint through its directory or its index", function()
    local sh = expected.sharded
    for _, path in ipairs({ FIX .. "sharded", FIX .. "sharded/model.safetensors.index.json" }) do
      local f = dq.safetensors.open(path)
      assert.are.same(sorted_keys(sh.tensors), f:names())
      assert.are.equal(#sh.files, f:file_count())
      for name, e in pairs(sh.tensors) do
        local info = f:info(name)
        assert.are.equal(sh.weight_map[name], info.file:match("[^/]+$"), name)
        assert_values(f:tensor(name), e, name)
      end
      assert.are.same(sh.metadata, f:metadata())
      f:close()
    end
  end)

  it("copies misaligned data instead of viewing it", function()
    -- A 9-byte header puts the data at byte 17: not a multiple of 4.
    local dir = files.tempdir()
    local header = '{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}'
    header = header .. string.rep(" ", 9 - #header % 8)
    assert.are.equal(1, (8 + #header) % 4)
    files.write(dir .. "/m.safetensors", st_bytes(header, ffi.string(ffi.new("float[2]", { 1.5, -3 }), 8)))
    local f = dq.safetensors.open(dir .. "/m.safetensors")
    local t = f:tensor("x")
    assert.are.equal(0, tonumber(ffi.cast("uintptr_t", t.data)) % 4)
    assert.are.same({ 1.5, -3 }, t:tolist())
    f:close()
    files.remove_tree(dir)
  end)

  it("describes but refuses tensors of more than 8 dims", function()
    local dir = files.tempdir()
    local path = dir .. "/deep.safetensors"
    files.write(path, st_bytes('{"deep":{"dtype":"F32","shape":[1,1,1,1,1,1,1,1,1],"data_offsets":[0,4]}}', "\0\0\0\0"))
    local f = dq.safetensors.open(path)
    assert.are.same({ "deep" }, f:names())
    rejects(function() f:info("deep") end, "deep", "9 dims", "at most 8")
    rejects(function() f:tensor("deep") end, "deep", "9 dims")
    f:close()
    files.remove_tree(dir)
  end)
end)

-- ---- validation ---------------------------------------------------------------------------

describe("safetensors validation", function()
  local dir
  before_each(function() dir = files.tempdir() end)
  after_each(function() files.remove_tree(dir) end)

  -- Write `bytes` as a file and check that opening it fails naming the
  -- file and every needle.
  local function refuses(bytes, ...)
    local path = dir .. "/bad.safetensors"
    files.write(path, bytes)
    return rejects(function() dq.safetensors.open(path) end, path, ...)
  end

  local F32x2 = '"dtype":"F32","shape":[2]'

  it("a missing file", function()
    rejects(function() dq.safetensors.open(dir .. "/absent.safetensors") end, "absent.safetensors", "No such file")
  end)

  it("a file shorter than 8 bytes", function()
    refuses("\1\0\0", "3 bytes", "shorter than the 8-byte header")
  end)

  it("a header length beyond the end of the file", function()
    refuses(u64le(1000) .. "{}", "header length 1000", "beyond the end of the file (10 bytes)")
  end)

  it("a header length over 100 MB", function()
    refuses(u64le(200000000) .. "{}", "200000000", "over the 100000000-byte limit")
    refuses(string.rep("\255", 8) .. "{}", "over the 100000000-byte limit")
  end)

  it("malformed JSON and a header that is not an object", function()
    refuses(st_bytes('{"a": {"dtype": "F32",'), "safetensors header", "line 1, column")
    refuses(st_bytes("[1, 2]"), "not a JSON object")
    refuses(st_bytes(""), "safetensors header", "unexpected end of input")
  end)

  it("offsets outside the data area", function()
    refuses(st_bytes('{"a":{' .. F32x2 .. ',"data_offsets":[0,8]}}', "\0\0\0\0"), '"a"', "[0, 8]",
      "outside the data area (4 bytes")
    refuses(st_bytes('{"a":{' .. F32x2 .. ',"data_offsets":[8,0]}}', string.rep("\0", 8)), "end before they begin")
  end)

  it("overlapping ranges", function()
    refuses(st_bytes('{"a":{' .. F32x2 .. ',"data_offsets":[0,8]},"b":{' .. F32x2 .. ',"data_offsets":[4,12]}}',
      string.rep("\0", 12)), '"a" [0, 8]', '"b" [4, 12]', "overlap")
  end)

  it("a byte size that disagrees with dtype x shape", function()
    refuses(st_bytes('{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}', string.rep("\0", 8)),
      '"a"', "hold 8 bytes", "F32 and shape [3] need 12")
    refuses(st_bytes('{"a":{"dtype":"BF16","shape":[4611686018427387904,4],"data_offsets":[0,8]}}',
      string.rep("\0", 8)), "more than 2^64 bits")
  end)

  it("an unknown dtype", function()
    refuses(st_bytes('{"a":{"dtype":"Q4","shape":[2],"data_offsets":[0,1]}}', "\0"), '"a"', 'unknown dtype "Q4"',
      "BF16")
  end)

  it("duplicate names", function()
    refuses(st_bytes('{"a":{' .. F32x2 .. ',"data_offsets":[0,8]},"a":{' .. F32x2 .. ',"data_offsets":[8,16]}}',
      string.rep("\0", 16)), 'tensor name "a" appears more than once')
    refuses(st_bytes('{"__metadata__":{"k":"1","k":"2"}}'), '__metadata__ key "k" appears more than once')
  end)

  it("entries of the wrong shape", function()
    refuses(st_bytes('{"a":{"dtype":"F32","data_offsets":[0,0]}}'), '"a"', 'missing "shape"')
    refuses(st_bytes('{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}}'), "shape entry 0")
    refuses(st_bytes('{"a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,0]}}'), "shape entry 0")
    refuses(st_bytes('{"a":{"dtype":32,"shape":[],"data_offsets":[0,4]}}', "\0\0\0\0"), "dtype must be a string")
    refuses(st_bytes('{"a":{"dtype":"F32","shape":[],"data_offsets":[0]}}'), "data_offsets must be [begin, end]")
    refuses(st_bytes('{"a":[1]}'), '"a"', "expected an object")
    refuses(st_bytes('{"a\\u0000b":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}'), "NUL")
  end)

  it("__metadata__ that is not a map of strings", function()
    refuses(st_bytes('{"__metadata__":{"n":1}}'), '__metadata__ key "n" is not a string')
    refuses(st_bytes('{"__metadata__":["x"]}'), "__metadata__ must be an object")
  end)

  it("broken sharded checkpoints", function()
    local shard = st_bytes('{"a":{' .. F32x2 .. ',"data_offsets":[0,8]}}', string.rep("\0", 8))
    files.write(dir .. "/s1.safetensors", shard)
    local index = dir .. "/model.safetensors.index.json"
    files.write(index, '{"weight_map": {"a": "s1.safetensors", "b": "s1.safetensors"}}')
    rejects(function() dq.safetensors.open(dir) end, index, 'tensor "b"', "s1.safetensors", "no such tensor")
    files.write(index, '{"weight_map": {"a": "s2.safetensors"}}')
    rejects(function() dq.safetensors.open(index) end, "shard s2.safetensors", "cannot open")
    files.write(index, '{"weights": {}}')
    rejects(function() dq.safetensors.open(dir) end, index, "weight_map")
    files.write(index, '{"weight_map": {"a": 3}}')
    rejects(function() dq.safetensors.open(dir) end, 'weight_map entry "a" must name a shard file')
    files.write(dir .. "/s1.safetensors", "short")
    files.write(index, '{"weight_map": {"a": "s1.safetensors"}}')
    rejects(function() dq.safetensors.open(dir) end, "s1.safetensors", "shorter than the 8-byte header")
  end)

  it("a directory without a checkpoint", function()
    rejects(function() dq.safetensors.open(dir) end, dir, "neither model.safetensors nor model.safetensors.index.json")
  end)
end)

-- ---- writing ---------------------------------------------------------------------------------

-- The roundtrip fixture's tensors built from Lua values (not copied bytes).
local function build(tensors)
  local out = {}
  for name, e in pairs(tensors) do
    local dtype = engine_dtype[e.dtype]
    local t = dq.empty(e.shape, { dtype = dtype })
    if #e.values > 0 then
      local host_dtype = (dtype == "f32" or dtype == "bf16" or dtype == "f16") and "f32" or "i64"
      local host = dq.empty({ #e.values }, { dtype = host_dtype })
      local ptr = ffi.cast(host_dtype == "f32" and "float*" or "int64_t*", host.data)
      for i, v in ipairs(e.values) do ptr[i - 1] = v end
      t:copy_(host)
    end
    out[name] = t
  end
  return out
end

describe("safetensors writing", function()
  local dir
  before_each(function() dir = files.tempdir() end)
  after_each(function() files.remove_tree(dir) end)

  it("writes the bytes safetensors writes, from tensors built in Lua", function()
    local rt = expected.roundtrip
    dq.safetensors.save(dir .. "/out.safetensors", build(rt.tensors), rt.metadata)
    assert.are.equal(files.read(FIX .. "roundtrip.safetensors"), files.read(dir .. "/out.safetensors"))
    assert.are.same({ "out.safetensors" }, files.list_dir(dir))
  end)

  it("writes the bytes it read (file -> dq -> file)", function()
    local f = dq.safetensors.open(FIX .. "roundtrip.safetensors")
    dq.safetensors.save(dir .. "/again.safetensors", f:tensors(), f:metadata())
    f:close()
    assert.are.equal(files.read(FIX .. "roundtrip.safetensors"), files.read(dir .. "/again.safetensors"))
  end)

  it("round trips every engine dtype, a 0-d and an empty tensor through its own reader", function()
    local rt = expected.roundtrip
    local path = dir .. "/rt.safetensors"
    dq.safetensors.save(path, build(rt.tensors), { b = "2", a = "1" })
    local f = dq.safetensors.open(path)
    for name, e in pairs(rt.tensors) do assert_values(f:tensor(name), e, name) end
    assert.are.same({ a = "1", b = "2" }, f:metadata())
    -- several metadata keys are written sorted (safetensors' own order is random)
    assert.is_truthy(files.read(path):find('{"__metadata__":{"a":"1","b":"2"},', 9, true))
    f:close()
  end)

  it("writes an empty file and a file without metadata as safetensors does", function()
    dq.safetensors.save(dir .. "/none.safetensors", {})
    assert.are.equal(u64le(8) .. "{}      ", files.read(dir .. "/none.safetensors"))
    assert.are.same({}, dq.safetensors.open(dir .. "/none.safetensors"):names())
  end)

  it("writes sharded checkpoints byte-identical to transformers' save_pretrained", function()
    local sh = expected.sharded
    local built = build(sh.tensors)
    local list = {}
    for i, name in ipairs(sh.order) do list[i] = { name, built[name] } end
    dq.safetensors.save_checkpoint(dir, list, sh.metadata, { max_shard_size = sh.max_shard_bytes })
    local written = { "model.safetensors.index.json" }
    for _, name in ipairs(sh.files) do written[#written + 1] = name end
    table.sort(written)
    assert.are.same(written, files.list_dir(dir))
    for _, name in ipairs(written) do
      assert.are.equal(files.read(FIX .. "sharded/" .. name), files.read(dir .. "/" .. name), name)
    end
    -- Saving again unsharded replaces the layout: the stale shards and index
    -- go; metadata defaults to transformers' {format = "pt"}.
    dq.safetensors.save_checkpoint(dir, list)
    assert.are.same({ "model.safetensors" }, files.list_dir(dir))
    local f = dq.safetensors.open(dir)
    assert.are.same({ format = "pt" }, f:metadata())
    for name, e in pairs(sh.tensors) do assert_values(f:tensor(name), e, name) end
    f:close()
    -- ... and sharded again removes model.safetensors.
    dq.safetensors.save_checkpoint(dir, list, sh.metadata, { max_shard_size = "64B" })
    assert.are.same(written, files.list_dir(dir))
  end)

  it("refuses bad arguments before creating any file", function()
    local t = dq.zeros(2)
    local path = dir .. "/x.safetensors"
    rejects(function() dq.safetensors.save(path, { { "a", t }, { "a", t } }) end, 'tensor name "a" is given more than once')
    rejects(function() dq.safetensors.save(path, { __metadata__ = t }) end, '"__metadata__" is reserved')
    rejects(function() dq.safetensors.save(path, { a = t }, { n = 1 }) end, "keys and values must be strings")
    rejects(function() dq.safetensors.save(path, { a = 3 }) end, '"a" is number, not a tensor')
    local gone = dq.zeros(2)
    gone:free()
    rejects(function() dq.safetensors.save(path, { a = gone }) end, 'tensor "a"', "undefined tensor", "nothing to write")
    rejects(function() dq.safetensors.save_checkpoint(dir, { a = t }, nil, { max_shard_size = "lots" }) end,
      "is not a size")
    assert.are.same({}, files.list_dir(dir))
  end)

  it("leaves nothing behind when the target cannot be written", function()
    local t = dq.ones(4)
    rejects(function() dq.safetensors.save(dir .. "/no/such/dir/x.safetensors", { a = t }) end,
      "cannot create a temporary file", "no/such/dir", "No such file")
    os.execute("mkdir '" .. dir .. "/taken.safetensors'")
    rejects(function() dq.safetensors.save(dir .. "/taken.safetensors", { a = t }) end, "is a directory")
    assert.are.same({ "taken.safetensors" }, files.list_dir(dir))
    files.write(dir .. "/blocker", "a file where a directory should be")
    rejects(function() dq.safetensors.save_checkpoint(dir .. "/blocker/ckpt", { a = t }) end, "cannot create directory")
    assert.are.same({ "blocker", "taken.safetensors" }, files.list_dir(dir))
  end)

  it("leaves nothing behind in a directory it may not write to", function()
    pcall(ffi.cdef, 'unsigned int dq_spec_geteuid(void) __asm__("geteuid");')
    if ffi.C.dq_spec_geteuid() == 0 then
      pending("running as root: permissions do not stop root from writing")
      return
    end
    local locked = dir .. "/locked"
    os.execute("mkdir '" .. locked .. "' && chmod 555 '" .. locked .. "'")
    rejects(function() dq.safetensors.save(locked .. "/x.safetensors", { a = dq.ones(2) }) end,
      "cannot create a temporary file", "Permission denied")
    assert.are.same({}, files.list_dir(locked))
    os.execute("chmod 755 '" .. locked .. "'")
  end)

  it("removes the partial file and keeps the old one when writing fails midway", function()
    if ffi.os ~= "Linux" then
      pending("simulates a full disk with RLIMIT_FSIZE, which this spec knows on Linux only")
      return
    end
    -- A file size limit makes write() fail with EFBIG after the header,
    -- like a disk filling up (SIGXFSZ ignored so the failure is an error).
    -- Private names (asm labels) so no other declaration of these can clash.
    pcall(ffi.cdef, [[
      struct dq_spec_rlimit { uint64_t cur, max; };
      int dq_spec_getrlimit(int resource, struct dq_spec_rlimit *limit) __asm__("getrlimit");
      int dq_spec_setrlimit(int resource, const struct dq_spec_rlimit *limit) __asm__("setrlimit");
      void *dq_spec_signal(int sig, void *handler) __asm__("signal");
    ]])
    local RLIMIT_FSIZE, SIGXFSZ = 1, 25
    local path = dir .. "/model.safetensors"
    files.write(path, "the previous checkpoint")
    local big = dq.ones(100000) -- 400 kB
    local old = ffi.new("struct dq_spec_rlimit")
    assert(ffi.C.dq_spec_getrlimit(RLIMIT_FSIZE, old) == 0)
    local handler = ffi.C.dq_spec_signal(SIGXFSZ, ffi.cast("void *", 1)) -- SIG_IGN
    local limited = ffi.new("struct dq_spec_rlimit", { 4096, old.max })
    assert(ffi.C.dq_spec_setrlimit(RLIMIT_FSIZE, limited) == 0)
    local ok, err = pcall(dq.safetensors.save, path, { big = big })
    ffi.C.dq_spec_setrlimit(RLIMIT_FSIZE, old)
    ffi.C.dq_spec_signal(SIGXFSZ, handler)
    assert.is_false(ok)
    assert.is_truthy(tostring(err):find("writing " .. path .. " failed", 1, true), tostring(err))
    assert.are.equal("the previous checkpoint", files.read(path))
    assert.are.same({ "model.safetensors" }, files.list_dir(dir))
  end)
end)
