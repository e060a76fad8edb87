-- dqbart.suggest: "did you mean" for an unknown key, option or name.
--
--   suggest.distance("lr", "rl")            -> 1
--   suggest.nearest("bem", { "beams", "seed" })      -> "beams"
--   suggest.nearest("bem", { beams = true, seed = true })  (a set works too)
local M = {}

-- Damerau-Levenshtein (optimal string alignment): a swap of two neighbours
-- counts once, so "lr" and "rl" are close.
function M.distance(a, b)
  local d = {}
  for i = 0, #a do d[i] = { [0] = i } end
  for j = 0, #b do d[0][j] = j end
  for i = 1, #a do
    for j = 1, #b do
      local cost = a:byte(i) == b:byte(j) and 0 or 1
      local v = math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
      if i > 1 and j > 1 and a:byte(i) == b:byte(j - 1) and a:byte(i - 1) == b:byte(j) then
        v = math.min(v, d[i - 2][j - 2] + 1)
      end
      d[i][j] = v
    end
  end
  return d[#a][#b]
end

-- The candidate nearest to `word`: from a list of names or the keys of a
-- set; of equally near ones the first in sorted order, so a message never
-- depends on table iteration order. nil when there are no candidates.
function M.nearest(word, candidates)
  word = tostring(word)
  local names = candidates
  if candidates[1] == nil then
    names = {}
    for k in pairs(candidates) do names[#names + 1] = tostring(k) end
  end
  local best, best_d
  for _, name in ipairs(names) do
    local d = M.distance(word, name)
    if not best_d or d < best_d or (d == best_d and name < best) then best, best_d = name, d end
  end
  return best
end

return M
