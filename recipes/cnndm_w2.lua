-- cnndm_w2.lua: DQ-BART 2-2-8 on CNN/DailyMail 3.0.0, all 6-6 layers of
-- the reference's teacher (ainize/bart-base-cnn). The task sets the fields
-- (article -> highlights) and CNN/DM's generation: 4 beams, length penalty
-- 2.0, 56 to 142 tokens. The paper: 42.94 / 20.07 / 40.13 ROUGE-1/2/L.
--   DQBART_TEACHER=DIR DQBART_CNNDM_DIR=DIR dqbart recipes/cnndm_w2.lua [--dry-run]
return dq.recipe {
  task = "cnndm",
  teacher = { path = dq.recipe.teacher_env("cnndm") },
  data = { dir = dq.recipe.data_env("cnndm") },
  student = { encoder_layers = 6, decoder_layers = 6 },
  quant = { bits = "2-2-8" },
}
