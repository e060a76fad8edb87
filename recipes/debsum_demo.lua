-- debsum_demo.lua: DQ-BART end to end on a small machine. The task:
-- summarize a Debian package's long description into its one-line
-- synopsis (the debsum corpus).
--   1. train a BPE vocabulary and a small BART teacher from scratch
--      (teacher.train below);
--   2. distill it into a 2-2-8 student with one decoder layer instead of
--      three (ternary weights and embedding, 8-bit activations).
-- Sized to finish in under 15 minutes on 2 CPU cores; it uses the GPU when
-- there is one. Data: the committed sample (spec/fixtures/debsum, 2000
-- training examples), or the full corpus: `dqbart data debsum --out DIR`
-- and DQBART_DEBSUM_DIR=DIR (training then stops at 3000 examples).
--   dqbart recipes/debsum_demo.lua --dry-run
--   dqbart recipes/debsum_demo.lua --set schedule.epochs=1   (a quicker look)
local sample = dq.recipe.here() .. "/../spec/fixtures/debsum"

return dq.recipe {
  task = "summarization", -- fields document -> summary
  data = {
    dir = dq.recipe.env("DQBART_DEBSUM_DIR", { default = sample,
      hint = "build the corpus with `dqbart data debsum --out DIR` (or copy the sample: "
        .. "`dqbart data debsum --sample --out DIR`) and set DQBART_DEBSUM_DIR=DIR" }),
    max_source_length = 128, max_target_length = 32,
    limit_train = 3000, limit_valid = 150, limit_test = 150,
  },
  teacher = {
    train = {
      vocab_size = 4000, d_model = 128, heads = 4, ffn_dim = 512,
      encoder_layers = 3, decoder_layers = 3,
      epochs = 6, lr = 1e-3, batch_size = 16,
    },
  },
  student = { encoder_layers = 3, decoder_layers = 1 },
  quant = { bits = "2-2-8" },
  -- A small model from scratch takes larger steps than bart-base's 3e-5.
  optim = { lr = 3e-4 },
  schedule = { epochs = 3 },
  batch = { size = 16, accumulation = 1 },
  -- Synopses are short: at most 32 tokens.
  eval = { beams = 4, max_length = 32, min_length = 3 },
}
