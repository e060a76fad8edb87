-- xsum_w8.lua: DQ-BART 8-8-8 on XSUM, all 6-6 layers of a BART-base teacher
-- (the paper: 42.51 / 19.61 / 34.61 ROUGE-1/2/L at 138.1 MiB, from 43.84 /
-- 20.79 / 35.71 at 532.0 MiB). Everything else is the reference's: AdamW
-- lr 3e-5, 20 epochs, 8 x 2 examples per update, 5% warmup, 6 beams.
--   DQBART_TEACHER=DIR DQBART_XSUM_DIR=DIR dqbart recipes/xsum_w8.lua [--dry-run]
return dq.recipe {
  task = "xsum",
  teacher = { path = dq.recipe.teacher_env("xsum") },
  data = { dir = dq.recipe.data_env("xsum") },
  student = { encoder_layers = 6, decoder_layers = 6 },
  quant = { bits = "8-8-8" },
}
