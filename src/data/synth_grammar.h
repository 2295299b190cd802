/* The synthetic translation grammar: one rule set builds an English sentence together with its
 * exact German and Chinese translations (numbers, colours, objects, places, times; statements,
 * negations, yes/no questions, "how many", "where", "there is" and predicative colour
 * sentences), so a small model can learn a real translation task whose references are right by
 * construction. It owns the word tables and the agreement rules (German case, gender, number and
 * adjective declension, verb agreement and V2 order; Chinese classifiers, 的, 两, word order).
 * It never touches audio or files.
 *
 * Conventions (one choice each, so the mapping English -> German/Chinese is a function):
 * - Cardinals 2..99 are words in all three languages ("twenty-one", "einundzwanzig", "二十一");
 *   2 before a classifier is 两. "one" is only ever the article ("a red car", "ein rotes Auto",
 *   "一辆红色的汽车"); times use 1..12 ("um ein Uhr", "um halb eins", "一点", "两点半").
 * - English "you" is German "du" and Chinese 你.
 * - Colours are attributive with 的 in Chinese ("红色的汽车") and predicative as "是红色的".
 * - Definite objects and subjects take 那 + classifier (plural 那些) in Chinese; definite places
 *   are bare nouns with a localizer ("在桌子上"); indefinite ones take 一 + classifier.
 * - Statements front the time phrase ("At seven o'clock I see ..."; German V2: "Um sieben Uhr
 *   sehe ich ..."); questions put it after the place in English and after the subject in German.
 *   Chinese always says subject, time, 在 + place, (negation,) verb, object.
 * - Negated objects: "a X" -> "kein X" / 没有看到 X; "any Xs" -> "keine Xs"; drinks are mass nouns
 *   there ("I do not drink tea", "Ich trinke keinen Tee", "我不喝茶"). */
#ifndef AUDISTILL_DATA_SYNTH_GRAMMAR_H
#define AUDISTILL_DATA_SYNTH_GRAMMAR_H

#include <stdint.h>

#include "core/rng.h"

#define AD_SYNTH_TEXT_MAX 512

typedef struct {
    char en[AD_SYNTH_TEXT_MAX];
    char de[AD_SYNTH_TEXT_MAX];
    char zh[AD_SYNTH_TEXT_MAX];
} ad_synth_text;

typedef enum {
    AD_SYNTH_SVO,     /* subject verb object [place] [time] */
    AD_SYNTH_THERE,   /* there is/are object place */
    AD_SYNTH_LOCATED, /* subject is/are place */
    AD_SYNTH_COLOUR,  /* subject is/are colour */
} ad_synth_kind;

typedef enum {
    AD_MOOD_STATEMENT,
    AD_MOOD_NEGATION,
    AD_MOOD_QUESTION, /* yes/no */
    AD_MOOD_HOW_MANY, /* SVO and THERE: the object is "how many Xs" */
    AD_MOOD_WHERE,    /* LOCATED: "where is X?" (no place) */
} ad_synth_mood;

typedef enum {
    AD_DET_A,      /* a red car / ein rotes Auto / 一辆红色的汽车 */
    AD_DET_THE,    /* the red car / das rote Auto / 那辆红色的汽车 */
    AD_DET_THE_PL, /* the red cars / die roten Autos / 那些红色的汽车 */
    AD_DET_NUMBER, /* three red cars / drei rote Autos / 三辆红色的汽车 */
    AD_DET_NEG, /* (not) a red car, no red car / kein rotes Auto / 红色的汽车; drinks: mass */
    AD_DET_NEG_PL,   /* (not) any red cars, no red cars / keine roten Autos / 红色的汽车 */
    AD_DET_POSS,     /* my car / mein Auto / 我的汽车 (no colour) */
    AD_DET_POSS_PL,  /* my cars / meine Autos / 我的汽车 */
    AD_DET_HOW_MANY, /* how many red cars / wie viele rote Autos / 多少辆红色的汽车 */
} ad_synth_det;

typedef struct {
    ad_synth_det det;
    int number;    /* AD_DET_NUMBER: 2..99 */
    int colour;    /* attributive colour, -1 none */
    int noun;      /* index into the noun table (objects) or the location table (places) */
    int container; /* drinks: cup/bottle; -1 otherwise (and for AD_DET_NEG drinks) */
    int possessor; /* AD_DET_POSS*: my, your, ... */
} ad_synth_np;

typedef struct {
    ad_synth_kind kind;
    ad_synth_mood mood;
    int subject;        /* SVO: index into the subject table */
    int verb;           /* SVO */
    ad_synth_np object; /* SVO/THERE: the object; LOCATED/COLOUR: the subject */
    int prep;           /* -1: no place */
    ad_synth_np place;  /* noun indexes the location table */
    int time;           /* -1: none */
    int colour;         /* COLOUR: the predicate colour */
} ad_synth_spec;

typedef enum {
    AD_SYNTH_SUBJECTS,
    AD_SYNTH_VERBS,
    AD_SYNTH_NOUNS,
    AD_SYNTH_LOCATIONS,
    AD_SYNTH_PREPS,
    AD_SYNTH_COLOURS,
    AD_SYNTH_CONTAINERS,
    AD_SYNTH_POSSESSORS,
    AD_SYNTH_TIMES,
} ad_synth_table;

/* Index of the entry whose English form is `en` ("car", "next to", "at half past seven",
 * "my brother"), or -1. */
int ad_synth_lookup(ad_synth_table table, const char *en);

/* Renders one spec in the three languages. Fails (naming the field) on out-of-range indices or
 * combinations the grammar does not define; it does not judge plausibility (the sampler does). */
int ad_synth_render(const ad_synth_spec *spec, ad_synth_text *out);

/* Draws one plausible spec (verb/noun compatibility, what fits on/in/under what). */
void ad_synth_sample(ad_rng *rng, ad_synth_spec *spec);

/* Number words 2..99 (1..99 for English/German standalone forms): "twenty-one", "einundzwanzig",
 * Chinese counting form before a classifier ("两", "二十二"). */
void ad_synth_number_en(int n, char *buf, int size);
void ad_synth_number_de(int n, char *buf, int size);
void ad_synth_number_zh(int n, char *buf, int size);

enum { AD_SYNTH_TRAIN, AD_SYNTH_DEV, AD_SYNTH_EVAL, AD_SYNTH_SPLITS };
extern const char *const ad_synth_split_names[AD_SYNTH_SPLITS];

/* Distinct sentences for the three splits, disjoint (by English text) and deterministic in
 * `seed`. Which split a sentence can be in depends on its text alone (a hash), so the splits
 * of corpora made with different seeds are disjoint too. Eval is drawn first, then dev, then train,
 * each from its own random stream, so the eval set depends only on the seed and its own size.
 * out[s] is malloc'ed (caller frees). */
int ad_synth_make_splits(uint64_t seed, const int counts[AD_SYNTH_SPLITS],
                         ad_synth_text *out[AD_SYNTH_SPLITS]);

#endif
