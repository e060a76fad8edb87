-- quant_only.lua: the paper's quantization-only baseline on XSUM: a 2-2-8
-- student with the teacher's 6-6 layers trained on the task loss alone
-- (no teacher forward, no distillation terms); it still starts from the
-- teacher's weights. The paper: 39.99 / 17.13 / 31.99 ROUGE-1/2/L, against
-- 40.06 / 17.34 / 32.46 for DQ-BART (xsum_w2.lua).
--   DQBART_TEACHER=DIR DQBART_XSUM_DIR=DIR dqbart recipes/quant_only.lua [--dry-run]
return dq.recipe {
  task = "xsum",
  teacher = { path = dq.recipe.teacher_env("xsum") },
  data = { dir = dq.recipe.data_env("xsum") },
  student = { encoder_layers = 6, decoder_layers = 6 },
  quant = { bits = "2-2-8" },
  distill = { enabled = false },
}
