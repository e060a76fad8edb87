-- Tokenizer throughput: encoding MB/s on one core and on all cores, beside
-- Hugging Face's tokenizers on the same text and machine (through
-- spec/bench/tokenize_peer.py when Python has `tokenizers`), and the BPE
-- trainer's time against the library's.
--
--   dqbart spec/bench/tokenize.lua [--mb 20] [--python python3] [--no-peer]
--                                  [--no-train] [--vocab-size 8000] [--repeat 3]
--                                  [--tokenizer DIR]... [--text FILE]
--
-- --tokenizer (repeatable) replaces the fixture tokenizers (bart_bpe,
-- mbart_unigram); --text replaces the generated text (one text per line).
--
-- The text (written to a temporary file) is lines of the fixture corpus
-- (English prose and code, a dozen other languages, emoji) in random order,
-- a fifth of the words given random endings so the piece caches do not see
-- only a few thousand distinct words. Every line is one text; each run
-- encodes all of them with special tokens in one batch call. Both sides
-- must produce the same ids (count and sum are compared).
local ffi = require("ffi")
local bench = dofile(arg[0]:gsub("[^/]*$", "") .. "bench.lua")
local files = require("files")

local opts = { mb = 20, python = "python3", peer = true, train = true, vocab_size = 8000, repeat_ = 3, tokenizers = {} }
local i = 1
while i <= #arg do
  local a = arg[i]
  if a == "--mb" then i = i + 1; opts.mb = tonumber(arg[i])
  elseif a == "--python" then i = i + 1; opts.python = arg[i]
  elseif a == "--no-peer" then opts.peer = false
  elseif a == "--no-train" then opts.train = false
  elseif a == "--vocab-size" then i = i + 1; opts.vocab_size = tonumber(arg[i])
  elseif a == "--repeat" then i = i + 1; opts.repeat_ = tonumber(arg[i])
  elseif a == "--tokenizer" then i = i + 1; opts.tokenizers[#opts.tokenizers + 1] = arg[i]
  elseif a == "--text" then i = i + 1; opts.text = arg[i]
  else error("unknown argument " .. a) end
  i = i + 1
end

local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local FIX = here .. "/../fixtures/tokenizers/"

-- ---- the text ------------------------------------------------------------------

local function make_text(mb)
  local lines = {}
  for l in files.read(FIX .. "corpus.txt"):gmatch("[^\n]+") do lines[#lines + 1] = l end
  local seed = 12345
  local function rand(n) -- a small LCG: the same text on every machine
    seed = (seed * 1103515245 + 12345) % 2147483648
    return seed % n
  end
  local letters = "abcdefghijklmnopqrstuvwxyz"
  local out, size, want = {}, 0, mb * 1e6
  while size < want do
    local line = lines[rand(#lines) + 1]:gsub("%a+", function(w)
      if rand(5) == 0 then
        local k = rand(4) + 1
        local tail = {}
        for j = 1, k do local p = rand(26) + 1; tail[j] = letters:sub(p, p) end
        return w .. table.concat(tail)
      end
    end)
    out[#out + 1] = line
    size = size + #line + 1
  end
  return out, size
end

local function checksum(ids, offsets)
  local p = ffi.cast("const int32_t *", ids.data)
  local total, sum = ids:nelement(), 0
  for k = 0, total - 1 do sum = sum + p[k] end
  return total, sum
end

local function run_ours(tok, texts, threads)
  dq.set_num_threads(threads)
  local best, total, sum = math.huge, 0, 0
  for _ = 1, opts.repeat_ do
    local t0 = bench.wall()
    local ids, offsets = tok:encode_flat(texts)
    local dt = bench.wall() - t0
    if dt < best then best = dt end
    total, sum = checksum(ids, offsets)
    ids:free()
    offsets:free()
  end
  return best, total, sum
end

local function peer(env, args)
  local cmd = ("%s %s %s/tokenize_peer.py %s 2>&1"):format(env, opts.python, here, args)
  local p = io.popen(cmd)
  local out = p:read("*a")
  p:close()
  local json_line = out:match("(%b{})%s*$")
  if not json_line then return nil, out end
  return require("dkjson").decode(json_line)
end

local texts, bytes, text_path
if opts.text then
  texts, bytes = {}, 0
  for l in files.read(opts.text):gmatch("([^\n]*)\n") do texts[#texts + 1] = l; bytes = bytes + #l end
  text_path = os.tmpname()
else
  texts, bytes = make_text(opts.mb)
  text_path = os.tmpname()
end
files.write(text_path, table.concat(texts, "\n") .. "\n") -- the peer reads the same lines
local mb = bytes / 1e6
local cores = dq.get_num_threads()
print(("text: %.1f MB, %d lines; %d cores (dqbart %s)"):format(mb, #texts, cores, dq.version()))

local rows = {}
local dirs = opts.tokenizers
if #dirs == 0 then dirs = { FIX .. "bart_bpe", FIX .. "mbart_unigram" } end
for _, dir in ipairs(dirs) do
  local name = dir:gsub("/+$", ""):match("[^/]+$")
  local tok = dq.tokenizer.load(dir)
  local t1, n1, s1 = run_ours(tok, texts, 1)
  local tn, nn, sn = run_ours(tok, texts, cores)
  assert(n1 == nn and s1 == sn, "one-thread and all-thread runs disagree")
  local row = { name = name, ours1 = mb / t1, oursn = mb / tn, ids = n1 }
  if opts.peer then
    for _, threads in ipairs({ 1, cores }) do
      local r, err = peer(threads == 1 and "RAYON_NUM_THREADS=1" or "",
        ("--tokenizer %s --text %s --repeat %d"):format(dir, text_path, opts.repeat_))
      if not r then
        print("peer failed (pip install tokenizers?): " .. tostring(err):sub(1, 300))
        opts.peer = false
        break
      end
      local best, which
      for _, k in ipairs({ "encode_batch", "encode_batch_fast" }) do
        local e = r[k]
        if e then
          if e.ids ~= n1 or e.id_sum ~= s1 then
            print(("WARNING: %s %s ids differ from dqbart's (%d ids, sum %d vs %d, %d)"):format(name, k, e.ids, e.id_sum, n1, s1))
          end
          if not best or e.mb_per_s > best then best, which = e.mb_per_s, k end
        end
      end
      row[threads == 1 and "peer1" or "peern"] = best
      row.peer_fn = which
      row.peer_version = r.tokenizers
    end
  end
  rows[#rows + 1] = row
end

print(("\nencode, MB/s (best of %d)     1 core   %d cores"):format(opts.repeat_, cores))
for _, r in ipairs(rows) do
  print(("  dqbart  %-18s %8.1f %9.1f"):format(r.name, r.ours1, r.oursn))
  if r.peer1 then
    print(("  tokenizers %-6s %-8s %8.1f %9.1f   (%s; same ids)"):format(r.peer_version, "", r.peer1, r.peern, r.peer_fn))
  end
end

if opts.train then
  local out = os.tmpname()
  os.remove(out)
  dq.set_num_threads(cores)
  local t0 = bench.wall()
  dq.tokenizer.train_bpe({ files = { text_path }, vocab_size = opts.vocab_size, min_frequency = 2, out = out })
  local ours = bench.wall() - t0
  print(("\ntrain byte-level BPE, vocab %d, %.1f MB, %d cores:"):format(opts.vocab_size, mb, cores))
  print(("  dqbart      %6.2f s"):format(ours))
  if opts.peer then
    local ref = out .. "-peer"
    local r = peer("", ("--train %s --vocab-size %d --min-frequency 2 --out %s"):format(text_path, opts.vocab_size, ref))
    if r then
      local function read(p)
        local f = io.open(p, "rb")
        local s = f and f:read("*a")
        if f then f:close() end
        return s
      end
      local same = read(out .. "/merges.txt") == read(ref .. "/merges.txt") and read(out .. "/vocab.json") == read(ref .. "/vocab.json")
      print(("  tokenizers  %6.2f s   (%s)"):format(r.train_seconds, same and "identical vocab.json and merges.txt"
        or "FILES DIFFER"))
    end
    files.remove_tree(ref)
  end
  files.remove_tree(out)
end
os.remove(text_path)
