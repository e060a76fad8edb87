-- dqbart.ffi: loads libdqbart and declares its C API for LuaJIT's FFI.
--
-- The declarations are generated from engine/dqbart.h at build time
-- (dqbart.cdef), never kept by hand. `check(status)` turns a non-zero
-- dq_status into a Lua error carrying the engine's message; every binding
-- module calls the engine through it.
local ffi = require("ffi")

ffi.cdef(require("dqbart.cdef"))

-- The launcher sets DQBART_LIBRARY to the library it is linked against;
-- plain LuaJIT can point at one with the environment variable of that name.
local function load_library()
  local candidates = { rawget(_G, "DQBART_LIBRARY"), os.getenv("DQBART_LIBRARY"), "dqbart" }
  local errors = {}
  for _, name in ipairs(candidates) do
    local ok, lib = pcall(ffi.load, name)
    if ok then return lib end
    errors[#errors + 1] = tostring(lib)
  end
  error("dqbart: cannot load libdqbart (" .. table.concat(errors, "; ") ..
        "); run through the dqbart launcher or set DQBART_LIBRARY", 0)
end

local C = load_library()

local function last_error()
  return ffi.string(C.dq_last_error())
end

-- Raise the engine's message as a Lua error at the caller's caller (the
-- user's line, not the binding's).
local function check(status, level)
  if status ~= 0 then error(last_error(), (level or 1) + 1) end
end

return { C = C, ffi = ffi, check = check, last_error = last_error }
