-- The subcommands of `dqbart`, in the order `dqbart --help` lists them.
-- Each name is a module dqbart.cli.<name> (dashes read as underscores) returning
--   { summary = "one line", run = function(argv) return exit_code end }
-- and answering `dqbart <name> --help` with its own usage (see cli/args.lua).
return {
  "rouge",
  "bleu",
  "data",
  "forward",
  "generate",
  "eval",
  "tokenize",
  "train-bpe",
  "size",
}
