-- dqbart.select: which teacher layers a student copies (DQBART.md section 3).
--
--   dq.select.layers(6, 3)   -> { 0, 2, 5 }   (teacher layers, 0-based, in student order)
--   dq.select.maps(teacher, { encoder = 6, decoder = 3 })
--     -> { encoder_layers = {...}, decoder_layers = {...} }   (for model:student)
--
-- "Maximal spacing": keep the first and the last teacher layer and spread
-- the others evenly, a half rounding down; one student layer means the
-- last teacher layer. The reference code's own maps win where they differ
-- (the DQ-BART table for 6-layer teachers: 5 students layers -> 0, 1, 3,
-- 4, 5), so the rule reproduces every map DQBART.md lists.
local M = {}

-- Reference maps: REFERENCE[teacher layers][student layers].
M.REFERENCE = {
  [6] = {
    [1] = { 5 },
    [2] = { 0, 5 },
    [3] = { 0, 2, 5 },
    [4] = { 0, 2, 3, 5 },
    [5] = { 0, 1, 3, 4, 5 },
    [6] = { 0, 1, 2, 3, 4, 5 },
  },
}

local function copy(list)
  local out = {}
  for i, v in ipairs(list) do out[i] = v end
  return out
end

function M.layers(teacher_layers, student_layers)
  local n, k = teacher_layers, student_layers
  if type(n) ~= "number" or n < 1 or n % 1 ~= 0 then
    error(("select.layers: teacher layers must be a positive integer, got %s"):format(tostring(n)), 2)
  end
  if type(k) ~= "number" or k < 1 or k % 1 ~= 0 or k > n then
    error(("select.layers: student layers must be an integer from 1 to %d (the teacher's), got %s"):format(
      n, tostring(k)), 2)
  end
  local ref = M.REFERENCE[n] and M.REFERENCE[n][k]
  if ref then return copy(ref) end
  if k == 1 then return { n - 1 } end
  local out = {}
  for i = 0, k - 1 do
    -- i * (n - 1) / (k - 1) rounded to nearest, halves down, in integers.
    local num, den = i * (n - 1), k - 1
    out[i + 1] = math.floor((2 * num + den - 1) / (2 * den))
  end
  return out
end

-- Maps for both stacks of a student of `teacher` (a model, or a table with
-- encoder_layers / decoder_layers counts); explicit lists pass through.
function M.maps(teacher, student)
  local info = type(teacher) == "table" and teacher.info and teacher:info() or teacher
  if type(info) ~= "table" or not info.encoder_layers then
    error("select.maps: the teacher must be a model or { encoder_layers = n, decoder_layers = n }", 2)
  end
  local function pick(spec, n)
    if type(spec) == "table" then return copy(spec) end
    return M.layers(n, spec or n)
  end
  student = student or {}
  return {
    encoder_layers = pick(student.encoder, info.encoder_layers),
    decoder_layers = pick(student.decoder, info.decoder_layers),
  }
end

return M
