-- dqbart train-bpe: train a byte-level BPE tokenizer (BART / RoBERTa /
-- GPT-2 style) as the tokenizers library's ByteLevelBPETokenizer does, and
-- write vocab.json, merges.txt and tokenizer.json.
local user_errors = require("dqbart.cli.user_errors")

local M = {
  summary = "train a byte-level BPE tokenizer (vocab.json + merges.txt + tokenizer.json)",
}

local SPEC = {
  command = "train-bpe",
  summary = "Train a byte-level BPE on text files (read line by line, each line with its\n"
    .. "newline, as tokenizers' trainer reads them) and write vocab.json, merges.txt and\n"
    .. "tokenizer.json into --out. The merges are those of tokenizers' BpeTrainer.",
  options = {
    { "--input", metavar = "FILE", multiple = true, help = "a training file (repeat it, or list files after the options)" },
    { "--vocab-size", metavar = "N", type = "number", default = 30000, help = "vocabulary size, special tokens included" },
    { "--min-frequency", metavar = "F", type = "number", default = 2, help = "a pair must occur this often to merge" },
    { "--special-tokens", metavar = "LIST", default = "<s>,<pad>,</s>,<unk>,<mask>",
      help = "comma-separated special tokens, first in the vocabulary" },
    { "--out", metavar = "DIR", required = true, help = "output directory (created if missing)" },
  },
  positional = { metavar = "FILE", min = 0, max = math.huge, help = "more training files" },
}

local function run(opts)
  local files = {}
  for _, f in ipairs(opts.input or {}) do files[#files + 1] = f end
  for _, f in ipairs(opts.positional) do files[#files + 1] = f end
  if #files == 0 then
    io.stderr:write("dqbart train-bpe: no training files (use --input FILE)\n")
    return 2
  end
  local specials = {}
  for s in opts.special_tokens:gmatch("[^,]+") do specials[#specials + 1] = s end
  dq.tokenizer.train_bpe({ files = files, vocab_size = opts.vocab_size, min_frequency = opts.min_frequency,
    special_tokens = specials, out = opts.out })
  local tok = dq.tokenizer.load(opts.out)
  io.stderr:write(("dqbart train-bpe: %d tokens written to %s\n"):format(tok.vocab_size, opts.out))
  return 0
end

-- Bad input and unloadable tokenizers are the user's errors: a message, no traceback.
M.run = user_errors.runner(SPEC, run)

return M
