-- wmt_enro_mbart_w8.lua: DQ-BART 8-8-8 for WMT16 English -> Romanian with
-- mBART (facebook/mbart-large-en-ro, 12-12 layers), scored with sacreBLEU.
-- The paper notes mBART loses much more than BART at low bit widths; 8-8-8
-- is the setting that holds up.
--   DQBART_TEACHER=DIR DQBART_WMT_ENRO_DIR=DIR dqbart recipes/wmt_enro_mbart_w8.lua [--dry-run]
return dq.recipe {
  task = "wmt_enro", -- translation.en -> translation.ro, BLEU, 5 beams
  teacher = { path = dq.recipe.teacher_env("wmt_enro") },
  data = {
    dir = dq.recipe.data_env("wmt_enro"),
    source_lang = "en_XX", target_lang = "ro_RO",
    max_source_length = 128, max_target_length = 128, -- sentences
  },
  student = { encoder_layers = 12, decoder_layers = 12 },
  quant = { bits = "8-8-8" },
}
