-- xsum_w2_e6d1.lua: DQ-BART 2-2-8 on XSUM with 6 encoder layers and a single
-- decoder layer (the teacher's last, layer 5): 28.1 MiB.
--   DQBART_TEACHER=DIR DQBART_XSUM_DIR=DIR dqbart recipes/xsum_w2_e6d1.lua [--dry-run]
return dq.recipe {
  task = "xsum",
  teacher = { path = dq.recipe.teacher_env("xsum") },
  data = { dir = dq.recipe.data_env("xsum") },
  student = { encoder_layers = 6, decoder_layers = 1 },
  quant = { bits = "2-2-8" },
}
