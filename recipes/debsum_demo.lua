-- debsum_demo.lua: DQ-BART end to end on a small machine. The task:
-- summarize a Debian package's long description into its one-line
-- synopsis (the debsum corpus, built from Debian's archive).
--   1. the data: $DQBART_DEBSUM_DIR if set; else the corpus built from
--      apt's lists into runs/debsum_data (once; as root the missing
--      Translation files are fetched with apt-get update); else the
--      committed sample spec/fixtures/debsum (2000 training examples);
--   2. a BPE vocabulary and a small BART teacher trained from scratch
--      (teacher.train; reused by later runs of the same spec);
--   3. a 2-2-8 student with one decoder layer instead of three (ternary
--      weights and embedding, 8-bit activations), distilled and quantized;
--   4. a table: teacher and student on the test set, with their sizes and
--      ROUGE.
-- Sized to finish in under 15 minutes on 2 CPU cores; it uses the GPU when
-- there is one.
--   dqbart recipes/debsum_demo.lua [--dry-run]
--   dqbart recipes/debsum_demo.lua --resume        (after Ctrl-C)
-- The quantization-only baseline of the paper on the same data, teacher and
-- number of updates (task loss only, no teacher forward):
--   dqbart recipes/debsum_demo.lua --set distill.enabled=false \
--     --set output_dir=runs/debsum_quant_only --set teacher.train.dir=runs/debsum_demo/teacher
local sample = dq.recipe.here() .. "/../spec/fixtures/debsum"
local built = "runs/debsum_data"
local exists = require("dqbart.checkpoint").exists

-- The corpus from apt's lists (built once), or the sample when that fails.
-- A dry run, --schema and --help build nothing.
local function corpus()
  local env = os.getenv("DQBART_DEBSUM_DIR")
  if env and env ~= "" then return env end
  if exists(built .. "/train.jsonl") then return built end
  for _, a in ipairs(arg or {}) do
    if a == "--dry-run" or a == "--schema" or a == "--help" or a == "-h" then return sample end
  end
  io.stdout:write("debsum_demo: building the debsum corpus from apt's lists into ", built, "\n")
  local ok, err = pcall(require("dqbart.corpus_debian").debsum, { out = built,
    log = function(m) io.stderr:write("dqbart data: ", m, "\n") end })
  if ok then return built end
  io.stderr:write(("debsum_demo: no corpus from apt's lists (%s);\n  using the committed sample %s\n"):format(
    tostring(err):gsub("\n.*", ""), sample))
  return sample
end

local dir = corpus()

return dq.recipe {
  task = "summarization", -- fields document -> summary
  data = {
    dir = dq.recipe.env("DQBART_DEBSUM_DIR", { default = dir,
      hint = "build the corpus with `dqbart data debsum --out DIR` (or copy the sample: "
        .. "`dqbart data debsum --sample --out DIR`) and set DQBART_DEBSUM_DIR=DIR" }),
    -- the synopsis draws on the first sentences: 64 tokens of description
    max_source_length = 64, max_target_length = 32,
    -- no token cache beside the data (the sample lives in the source tree);
    -- tokenizing takes about a second
    cache = false,
  },
  teacher = {
    train = {
      vocab_size = 4000, d_model = 128, heads = 4, ffn_dim = 512,
      encoder_layers = 3, decoder_layers = 3,
      -- a short run: no dropout, no label smoothing; 2000 updates of 32
      dropout = 0, label_smoothing = 0,
      max_steps = 2000, lr = 1e-3, batch_size = 32,
    },
  },
  student = { encoder_layers = 3, decoder_layers = 1 },
  quant = { bits = "2-2-8" },
  -- A small model from scratch takes larger steps than bart-base's 3e-5.
  optim = { lr = 1e-3 },
  schedule = { max_steps = 1000 },
  batch = { size = 32, accumulation = 1, eval_size = 16 },
  -- Synopses are short: at most 32 tokens.
  eval = { every_steps = 250, beams = 4, max_length = 32, min_length = 3 },
  log = { every_steps = 50 },
}
