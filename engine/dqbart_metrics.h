/*
 * dqbart_metrics.h: evaluation metrics, scored exactly as the reference
 * packages score them.
 *
 *  - ROUGE as Google's rouge-score 0.1.2 (rouge_scorer.RougeScorer): its
 *    tokenizer (lower case, every run of [^a-z0-9] is a separator), nltk
 *    3.x's PorterStemmer in its default NLTK_EXTENSIONS mode on tokens longer
 *    than 3 characters, rouge-N by clipped n-gram overlap, rougeL by the LCS
 *    of the whole token lists, rougeLsum by the union LCS over sentences
 *    separated by "\n" (counts capped so no token is used twice).
 *  - BLEU as sacreBLEU 2.6.0's default corpus BLEU: the 13a tokenizer, n-gram
 *    orders 1..4, exp smoothing, brevity penalty against the closest
 *    reference length, no effective order, mixed case.
 *
 * Texts are NUL-terminated UTF-8. Scores come back as fractions (ROUGE) or
 * as sacreBLEU's 0..100 numbers (BLEU); the Lua layer reports ROUGE x 100.
 * Included by dqbart.h: plain declarations only.
 */
#ifndef DQBART_METRICS_H
#define DQBART_METRICS_H

/* ---- ROUGE ---------------------------------------------------------------- */

enum {
  DQ_ROUGE_L = 0,     /* rougeL: LCS of the whole token lists */
  DQ_ROUGE_LSUM = -1, /* rougeLsum: union LCS over newline-separated sentences */
  DQ_ROUGE_MAX_N = 9  /* rouge1 .. rouge9, as rouge-score's "rouge[0-9]" */
};

typedef struct dq_rouge_options {
  /* 1: Porter-stem tokens longer than 3 characters (rouge-score's
   * use_stemmer=True); 0: no stemming. */
  int32_t stem;
  /* 1: before rougeLsum, split each text into sentences with
   * dq_split_sentences (a rule-based English splitter, NOT nltk's punkt; see
   * sentences.c). 0: sentences are the text's "\n"-separated lines, exactly
   * as rouge-score (pass texts already split for exact parity). */
  int32_t split_sentences;
  /* NULL, or a marker such as "<n>" (CNN/DailyMail preprocessing) that is
   * read as "\n" in every ROUGE type: a sentence break for rougeLsum and
   * never a token. */
  const char *sentence_sep;
} dq_rouge_options;

/* Score `count` (prediction, reference) pairs for `ntypes` ROUGE types
 * (types[k] = N in 1..DQ_ROUGE_MAX_N for rougeN, DQ_ROUGE_L, DQ_ROUGE_LSUM).
 * scores: count * ntypes * 3 doubles laid out [pair][type][precision,
 * recall, fmeasure], each in [0, 1]. options may be NULL (stemming on). */
DQ_API dq_status dq_rouge(int64_t count, const char *const *predictions,
                          const char *const *references, int ntypes, const int32_t *types,
                          const dq_rouge_options *options, double *scores);

/* rouge-score's tokens of `text`, joined by single spaces, into out
 * (capacity bytes including the NUL). *length gets the joined length; when
 * it does not fit the call fails and *length still tells the size needed. */
DQ_API dq_status dq_rouge_tokenize(const char *text, int stem, char *out, int64_t capacity,
                                   int64_t *length);

/* nltk PorterStemmer().stem(word) (NLTK_EXTENSIONS) for a word of ASCII
 * letters and digits (upper case is lowered first, as nltk does). Same
 * out/capacity/length contract as dq_rouge_tokenize. */
DQ_API dq_status dq_porter_stem(const char *word, char *out, int64_t capacity, int64_t *length);

/* Split plain English text into sentences (rules in sentences.c). bounds
 * gets 2 * count byte offsets [start, end) of each sentence, trimmed of
 * surrounding whitespace, empty ones dropped; capacity counts sentences
 * (strlen(text) / 2 + 1 always suffices). */
DQ_API dq_status dq_split_sentences(const char *text, int64_t *bounds, int64_t capacity,
                                    int64_t *count);

/* Bootstrap confidence interval of column means, as rouge-score's
 * BootstrapAggregator: `samples` resamples of the `rows` rows with
 * replacement, the mean of each column per resample, then the
 * (1 - confidence) / 2, 0.5 and 1 - (1 - confidence) / 2 quantiles of those
 * means (numpy's default linear interpolation). values: rows * cols,
 * row-major; low, mid, high: cols each. The resampling draws from Philox
 * keyed by `seed`, so intervals match rouge-score statistically, not bit for
 * bit (numpy's generator differs). */
DQ_API dq_status dq_bootstrap_mean(int64_t rows, int64_t cols, const double *values,
                                   int64_t samples, double confidence, uint64_t seed,
                                   double *low, double *mid, double *high);

/* ---- BLEU ------------------------------------------------------------------ */

enum {
  DQ_BLEU_MAX_ORDER = 4,
  /* Statistics per segment: hyp_len, ref_len, correct[1..4], total[1..4]. */
  DQ_BLEU_STATS = 10
};

typedef struct dq_bleu_score {
  double score;          /* 0..100 */
  double bp;             /* brevity penalty */
  double ratio;          /* sys_len / ref_len (0 when ref_len is 0) */
  double precisions[4];  /* 0..100, smoothed as sacreBLEU's 'exp' */
  int64_t sys_len, ref_len;
  int64_t correct[4], total[4];
} dq_bleu_score;

/* Corpus BLEU of `count` hypotheses against `nrefs` reference streams:
 * references[k * count + i] is reference k of segment i, NULL where a
 * segment has fewer references (each segment needs at least one).
 * segment_stats (may be NULL): count * DQ_BLEU_STATS. *signature_nrefs
 * (may be NULL) gets the references per segment, or -1 when it varies
 * (sacreBLEU's "nrefs:var"). */
DQ_API dq_status dq_bleu(int64_t count, const char *const *hypotheses, int nrefs,
                         const char *const *references, int64_t *segment_stats,
                         dq_bleu_score *corpus, int *signature_nrefs);

/* BLEU from DQ_BLEU_STATS statistics (one segment's or any sum of them):
 * one segment gives sacreBLEU's sentence_score with the same settings. */
DQ_API dq_status dq_bleu_from_stats(const int64_t *stats, dq_bleu_score *out);

/* sacreBLEU's signature for these settings,
 * "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0"; nrefs -1
 * gives "nrefs:var". */
DQ_API dq_status dq_bleu_signature(int nrefs, char *out, int64_t capacity);

/* sacreBLEU's 13a tokenization of one segment (after its rstrip), tokens
 * joined by single spaces; out/capacity/length as dq_rouge_tokenize. */
DQ_API dq_status dq_bleu_tokenize(const char *text, char *out, int64_t capacity,
                                  int64_t *length);

#endif /* DQBART_METRICS_H */
