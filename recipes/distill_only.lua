-- distill_only.lua: the paper's distillation-only baseline on XSUM: a
-- full-precision (32-32-32) student with 6 encoder and 3 decoder layers
-- distilled with every DQ-BART loss term, to set against the same layers
-- at 2-2-8 (xsum_w2_e6d3.lua).
--   DQBART_TEACHER=DIR DQBART_XSUM_DIR=DIR dqbart recipes/distill_only.lua [--dry-run]
return dq.recipe {
  task = "xsum",
  teacher = { path = dq.recipe.teacher_env("xsum") },
  data = { dir = dq.recipe.data_env("xsum") },
  student = { encoder_layers = 6, decoder_layers = 3 },
  quant = { bits = "32-32-32", enabled = false },
}
