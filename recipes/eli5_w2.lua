-- eli5_w2.lua: DQ-BART 2-2-8 on ELI5 (long-form answers to questions),
-- all 6-6 layers of a BART-base teacher fine-tuned on ELI5. The fields are
-- those of the hub's `eli5` export (title -> the first of answers.text);
-- other exports: --set data.source=... --set data.target=... The reference
-- gives no generation settings for ELI5: XSUM's apply, with room for
-- longer answers here.
--   DQBART_TEACHER=DIR DQBART_ELI5_DIR=DIR dqbart recipes/eli5_w2.lua [--dry-run]
return dq.recipe {
  task = "eli5",
  teacher = { path = dq.recipe.teacher_env("eli5") },
  data = { dir = dq.recipe.data_env("eli5"), max_target_length = 256 },
  student = { encoder_layers = 6, decoder_layers = 6 },
  quant = { bits = "2-2-8" },
  eval = { max_length = 256, min_length = 11 },
}
