-- xsum_w2.lua: DQ-BART 2-2-8 on XSUM with all 6-6 layers: ternary weights
-- and embedding, 8-bit activations (the paper: 40.06 / 17.34 / 32.46
-- ROUGE-1/2/L at 39.6 MiB, 13.4x smaller than the teacher).
--   DQBART_TEACHER=DIR DQBART_XSUM_DIR=DIR dqbart recipes/xsum_w2.lua [--dry-run]
return dq.recipe {
  task = "xsum",
  teacher = { path = dq.recipe.teacher_env("xsum") },
  data = { dir = dq.recipe.data_env("xsum") },
  student = { encoder_layers = 6, decoder_layers = 6 },
  quant = { bits = "2-2-8" },
}
