-- files: the scratch files and directories specs (and benchmarks) work in.
-- Every helper raises on failure, so a spec never goes on with a file it
-- could not read or write.
local M = {}

-- A new empty directory under the system's temporary directory.
function M.tempdir()
  local name = os.tmpname()
  os.remove(name)
  assert(os.execute("mkdir -p '" .. name .. "'") == 0)
  return name
end

-- A path under the temporary directory where nothing exists (for code
-- under test that must create it).
function M.fresh_path()
  local name = os.tmpname()
  os.remove(name)
  return name
end

function M.remove_tree(path)
  os.execute("rm -rf '" .. path .. "'")
end

-- The whole file, as bytes.
function M.read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

-- Writes the bytes, replacing the file; returns the path.
function M.write(path, bytes)
  local f = assert(io.open(path, "wb"))
  f:write(bytes)
  f:close()
  return path
end

-- A new temporary file holding the bytes; returns its path.
function M.temp_file(bytes)
  return M.write(os.tmpname(), bytes)
end

-- The file's lines, without their newlines.
function M.lines(path)
  local out = {}
  for line in io.lines(path) do out[#out + 1] = line end
  return out
end

function M.copy(src, dst)
  M.write(dst, M.read(src))
end

-- The names in a directory (hidden ones too), sorted.
function M.list_dir(dir)
  local p = io.popen("ls -A '" .. dir .. "'")
  local names = {}
  for line in p:lines() do names[#names + 1] = line end
  p:close()
  table.sort(names)
  return names
end

return M
