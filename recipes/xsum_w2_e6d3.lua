-- xsum_w2_e6d3.lua: DQ-BART 2-2-8 on XSUM with 6 encoder and 3 decoder
-- layers (teacher decoder layers 0, 2, 5 by the reference's map): 32.7 MiB,
-- 16.3x smaller than the 532 MiB teacher.
--   DQBART_TEACHER=DIR DQBART_XSUM_DIR=DIR dqbart recipes/xsum_w2_e6d3.lua [--dry-run]
return dq.recipe {
  task = "xsum",
  teacher = { path = dq.recipe.teacher_env("xsum") },
  data = { dir = dq.recipe.data_env("xsum") },
  student = { encoder_layers = 6, decoder_layers = 3 },
  quant = { bits = "2-2-8" },
}
