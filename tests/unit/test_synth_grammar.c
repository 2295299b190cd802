/* The synthetic translation grammar: hand-checked (English, German, Chinese) triples covering
 * German case/gender/declension, V2 order, contractions, dative plurals and number words, and
 * Chinese classifiers, 两, 的 and word order; plus properties of the sampler (valid, distinct,
 * deterministic, disjoint splits, English -> translation is a function). */
#include "data/synth_grammar.h"
#include "test.h"

#define NONE (-1)

static int L(ad_synth_table t, const char *en) {
    int i = ad_synth_lookup(t, en);
    if (i < 0) {
        fprintf(stderr, "unknown word '%s' in table %d\n", en, (int)t);
        exit(1);
    }
    return i;
}

/* A noun phrase: det, number (or possessor index for POSS), colour (or NULL), noun,
 * container (drinks, or NULL). `table` picks the object or location table. */
static ad_synth_np np(ad_synth_table table, ad_synth_det det, int number, const char *colour,
                      const char *noun, const char *container) {
    ad_synth_np p;
    memset(&p, 0, sizeof p);
    p.det = det;
    p.number = det == AD_DET_NUMBER ? number : 0;
    p.possessor = (det == AD_DET_POSS || det == AD_DET_POSS_PL) ? number : -1;
    p.colour = colour ? L(AD_SYNTH_COLOURS, colour) : -1;
    p.noun = L(table, noun);
    p.container = container ? L(AD_SYNTH_CONTAINERS, container) : -1;
    return p;
}

#define OBJ(det, num, colour, noun)    np(AD_SYNTH_NOUNS, det, num, colour, noun, NULL)
#define DRINK(det, num, container, dr) np(AD_SYNTH_NOUNS, det, num, NULL, dr, container)
#define LOC(det, num, colour, noun)    np(AD_SYNTH_LOCATIONS, det, num, colour, noun, NULL)
#define POSS(who)                      L(AD_SYNTH_POSSESSORS, who)

static ad_synth_spec spec(ad_synth_kind kind, ad_synth_mood mood) {
    ad_synth_spec s;
    memset(&s, 0, sizeof s);
    s.kind = kind;
    s.mood = mood;
    s.prep = s.time = s.colour = -1;
    s.subject = s.verb = 0;
    return s;
}

static ad_synth_spec svo(ad_synth_mood mood, const char *subject, const char *verb,
                         ad_synth_np object) {
    ad_synth_spec s = spec(AD_SYNTH_SVO, mood);
    s.subject = L(AD_SYNTH_SUBJECTS, subject);
    s.verb = L(AD_SYNTH_VERBS, verb);
    s.object = object;
    return s;
}

static ad_synth_spec at(ad_synth_spec s, const char *prep, ad_synth_np place) {
    s.prep = L(AD_SYNTH_PREPS, prep);
    s.place = place;
    return s;
}

static ad_synth_spec when(ad_synth_spec s, const char *time) {
    s.time = L(AD_SYNTH_TIMES, time);
    return s;
}

static ad_synth_spec referent(ad_synth_kind kind, ad_synth_mood mood, ad_synth_np subject) {
    ad_synth_spec s = spec(kind, mood);
    s.object = subject;
    return s;
}

static void expect(ad_synth_spec s, const char *en, const char *de, const char *zh) {
    ad_synth_text t;
    CHECK_OK(ad_synth_render(&s, &t));
    CHECK_MSG(strcmp(t.en, en) == 0, "en '%s' expected '%s'", t.en, en);
    CHECK_MSG(strcmp(t.de, de) == 0, "de '%s' expected '%s'", t.de, de);
    CHECK_MSG(strcmp(t.zh, zh) == 0, "zh '%s' expected '%s'", t.zh, zh);
}

static void test_svo_statements(void) {
    expect(at(svo(AD_MOOD_STATEMENT, "I", "see", OBJ(AD_DET_NUMBER, 3, "red", "car")), "in",
              LOC(AD_DET_THE, 0, NULL, "garden")),
           "I see three red cars in the garden.", "Ich sehe drei rote Autos im Garten.",
           "我在花园里看到三辆红色的汽车。");
    /* Fronted time: German V2 puts the verb before the subject; masculine accusative mixed. */
    expect(when(svo(AD_MOOD_STATEMENT, "my brother", "buy", OBJ(AD_DET_A, 0, "black", "dog")),
                "at seven o'clock"),
           "At seven o'clock my brother buys a black dog.",
           "Um sieben Uhr kauft mein Bruder einen schwarzen Hund.", "我哥哥七点买一只黑色的狗。");
    /* Dative plural after a number: strong -en on the adjective, -n on the noun; 两 + 把. */
    expect(at(svo(AD_MOOD_STATEMENT, "we", "see", OBJ(AD_DET_A, 0, "red", "ball")), "next to",
              LOC(AD_DET_NUMBER, 2, "black", "chair")),
           "We see a red ball next to two black chairs.",
           "Wir sehen einen roten Ball neben zwei schwarzen Stühlen.",
           "我们在两把黑色的椅子旁边看到一个红色的球。");
    expect(at(svo(AD_MOOD_STATEMENT, "they", "have", OBJ(AD_DET_NUMBER, 21, "yellow", "flower")),
              "in", LOC(AD_DET_THE, 0, NULL, "garden")),
           "They have twenty-one yellow flowers in the garden.",
           "Sie haben einundzwanzig gelbe Blumen im Garten.", "他们在花园里有二十一朵黄色的花。");
    /* Indefinite masculine dative: einem + weak-looking -en. */
    expect(at(svo(AD_MOOD_STATEMENT, "he", "see", OBJ(AD_DET_A, 0, NULL, "cat")), "under",
              LOC(AD_DET_A, 0, "red", "table")),
           "He sees a cat under a red table.", "Er sieht eine Katze unter einem roten Tisch.",
           "他在一张红色的桌子下面看到一只猫。");
    expect(at(when(svo(AD_MOOD_STATEMENT, "Tom", "read", OBJ(AD_DET_THE, 0, NULL, "letter")),
                   "at one o'clock"),
              "in", LOC(AD_DET_THE, 0, NULL, "office")),
           "At one o'clock Tom reads the letter in the office.",
           "Um ein Uhr liest Tom den Brief im Büro.", "汤姆一点在办公室里读那封信。");
    /* 两 before a classifier; feminine plural strong -e. */
    expect(svo(AD_MOOD_STATEMENT, "I", "need", OBJ(AD_DET_NUMBER, 2, "white", "cup")),
           "I need two white cups.", "Ich brauche zwei weiße Tassen.", "我需要两个白色的杯子。");
    expect(at(svo(AD_MOOD_STATEMENT, "my parents", "buy", OBJ(AD_DET_NUMBER, 16, NULL, "ticket")),
              "at", LOC(AD_DET_THE, 0, NULL, "station")),
           "My parents buy sixteen tickets at the station.",
           "Meine Eltern kaufen sechzehn Fahrkarten am Bahnhof.", "我父母在火车站买十六张票。");
    /* Definite plural object: weak -en; Chinese 那些. "an" before a vowel. */
    expect(svo(AD_MOOD_STATEMENT, "the children", "like", OBJ(AD_DET_THE_PL, 0, "grey", "mouse")),
           "The children like the grey mice.", "Die Kinder mögen die grauen Mäuse.",
           "孩子们喜欢那些灰色的老鼠。");
    expect(when(svo(AD_MOOD_STATEMENT, "she", "eat", OBJ(AD_DET_A, 0, NULL, "apple")), "every day"),
           "Every day she eats an apple.", "Jeden Tag isst sie einen Apfel.", "她每天吃一个苹果。");
    expect(at(svo(AD_MOOD_STATEMENT, "Peter", "drink", DRINK(AD_DET_NUMBER, 3, "cup", "tea")), "in",
              LOC(AD_DET_THE, 0, NULL, "kitchen")),
           "Peter drinks three cups of tea in the kitchen.",
           "Peter trinkt drei Tassen Tee in der Küche.", "彼得在厨房里喝三杯茶。");
    /* Neuter definite accusative and dative with an adjective: das/dem + -e/-en. */
    expect(at(svo(AD_MOOD_STATEMENT, "Maria", "find", OBJ(AD_DET_THE, 0, "blue", "book")), "on",
              LOC(AD_DET_THE, 0, "white", "bed")),
           "Maria finds the blue book on the white bed.",
           "Maria findet das blaue Buch auf dem weißen Bett.",
           "玛丽亚在白色的床上找到那本蓝色的书。");
}

static void test_svo_negation_and_questions(void) {
    expect(at(svo(AD_MOOD_NEGATION, "she", "find", OBJ(AD_DET_NEG, 0, "blue", "umbrella")), "under",
              LOC(AD_DET_THE, 0, NULL, "table")),
           "She does not find a blue umbrella under the table.",
           "Sie findet keinen blauen Regenschirm unter dem Tisch.",
           "她在桌子下面没有找到蓝色的雨伞。");
    expect(svo(AD_MOOD_NEGATION, "I", "see", OBJ(AD_DET_NEG_PL, 0, "red", "car")),
           "I do not see any red cars.", "Ich sehe keine roten Autos.", "我没有看到红色的汽车。");
    expect(svo(AD_MOOD_NEGATION, "Anna", "want", OBJ(AD_DET_NEG, 0, "green", "shirt")),
           "Anna does not want a green shirt.", "Anna will kein grünes Hemd.",
           "安娜不想要绿色的衬衫。");
    /* Drinks are mass nouns under negation. */
    expect(when(svo(AD_MOOD_NEGATION, "the teacher", "drink", DRINK(AD_DET_NEG, 0, NULL, "coffee")),
                "on Monday"),
           "On Monday the teacher does not drink coffee.",
           "Am Montag trinkt der Lehrer keinen Kaffee.", "老师星期一不喝咖啡。");
    expect(svo(AD_MOOD_NEGATION, "we", "have", DRINK(AD_DET_NEG, 0, NULL, "milk")),
           "We do not have milk.", "Wir haben keine Milch.", "我们没有牛奶。");
    expect(at(svo(AD_MOOD_QUESTION, "you", "see", OBJ(AD_DET_THE, 0, "white", "cat")), "on",
              LOC(AD_DET_THE, 0, NULL, "bed")),
           "Do you see the white cat on the bed?", "Siehst du die weiße Katze auf dem Bett?",
           "你在床上看到那只白色的猫吗？");
    expect(at(svo(AD_MOOD_QUESTION, "Maria", "find", OBJ(AD_DET_THE, 0, "grey", "mouse")), "under",
              LOC(AD_DET_THE, 0, NULL, "bed")),
           "Does Maria find the grey mouse under the bed?",
           "Findet Maria die graue Maus unter dem Bett?", "玛丽亚在床下面找到那只灰色的老鼠吗？");
    /* Question: the time follows the subject in German, ends the English sentence. */
    expect(when(at(svo(AD_MOOD_QUESTION, "he", "sell", OBJ(AD_DET_A, 0, NULL, "horse")), "in",
                   LOC(AD_DET_THE, 0, NULL, "park")),
                "in the evening"),
           "Does he sell a horse in the park in the evening?",
           "Verkauft er am Abend ein Pferd im Park?", "他晚上在公园里卖一匹马吗？");
    expect(when(svo(AD_MOOD_HOW_MANY, "Anna", "eat", OBJ(AD_DET_HOW_MANY, 0, "red", "apple")),
                "at half past twelve"),
           "How many red apples does Anna eat at half past twelve?",
           "Wie viele rote Äpfel isst Anna um halb eins?", "安娜十二点半吃多少个红色的苹果？");
    expect(svo(AD_MOOD_HOW_MANY, "you", "drink", DRINK(AD_DET_HOW_MANY, 0, "bottle", "water")),
           "How many bottles of water do you drink?", "Wie viele Flaschen Wasser trinkst du?",
           "你喝多少瓶水？");
}

static void test_there_is(void) {
    ad_synth_spec s = referent(AD_SYNTH_THERE, AD_MOOD_STATEMENT, DRINK(AD_DET_A, 0, "cup", "tea"));
    expect(at(s, "on", LOC(AD_DET_THE, 0, "red", "table")),
           "There is a cup of tea on the red table.", "Auf dem roten Tisch gibt es eine Tasse Tee.",
           "红色的桌子上有一杯茶。");
    s = referent(AD_SYNTH_THERE, AD_MOOD_NEGATION, OBJ(AD_DET_NEG_PL, 0, "green", "book"));
    expect(at(s, "in", LOC(AD_DET_THE, 0, NULL, "kitchen")),
           "There are no green books in the kitchen.", "In der Küche gibt es keine grünen Bücher.",
           "厨房里没有绿色的书。");
    s = referent(AD_SYNTH_THERE, AD_MOOD_NEGATION, OBJ(AD_DET_NEG, 0, NULL, "dog"));
    expect(at(s, "behind", LOC(AD_DET_THE, 0, NULL, "house")), "There is no dog behind the house.",
           "Hinter dem Haus gibt es keinen Hund.", "房子后面没有狗。");
    s = referent(AD_SYNTH_THERE, AD_MOOD_QUESTION, OBJ(AD_DET_A, 0, NULL, "apple"));
    expect(at(s, "in", LOC(AD_DET_THE, 0, NULL, "box")), "Is there an apple in the box?",
           "Gibt es einen Apfel in der Kiste?", "箱子里有一个苹果吗？");
    s = referent(AD_SYNTH_THERE, AD_MOOD_HOW_MANY, DRINK(AD_DET_HOW_MANY, 0, "bottle", "milk"));
    expect(at(s, "in", LOC(AD_DET_THE, 0, NULL, "kitchen")),
           "How many bottles of milk are there in the kitchen?",
           "Wie viele Flaschen Milch gibt es in der Küche?", "厨房里有多少瓶牛奶？");
    s = referent(AD_SYNTH_THERE, AD_MOOD_STATEMENT, OBJ(AD_DET_NUMBER, 99, NULL, "bird"));
    expect(at(s, "in", LOC(AD_DET_THE, 0, NULL, "park")),
           "There are ninety-nine birds in the park.", "Im Park gibt es neunundneunzig Vögel.",
           "公园里有九十九只鸟。");
    s = referent(AD_SYNTH_THERE, AD_MOOD_QUESTION, OBJ(AD_DET_NUMBER, 12, "brown", "egg"));
    expect(at(s, "at", LOC(AD_DET_THE, 0, NULL, "airport")),
           "Are there twelve brown eggs at the airport?", "Gibt es zwölf braune Eier am Flughafen?",
           "机场有十二个棕色的鸡蛋吗？");
}

static void test_copula(void) {
    ad_synth_spec s =
        referent(AD_SYNTH_LOCATED, AD_MOOD_STATEMENT, OBJ(AD_DET_THE, 0, "yellow", "bicycle"));
    expect(at(s, "next to", LOC(AD_DET_THE, 0, NULL, "house")),
           "The yellow bicycle is next to the house.", "Das gelbe Fahrrad ist neben dem Haus.",
           "那辆黄色的自行车在房子旁边。");
    s = referent(AD_SYNTH_LOCATED, AD_MOOD_NEGATION, OBJ(AD_DET_POSS_PL, POSS("my"), NULL, "key"));
    expect(at(s, "in", LOC(AD_DET_THE, 0, NULL, "car")), "My keys are not in the car.",
           "Meine Schlüssel sind nicht im Auto.", "我的钥匙不在汽车里。");
    /* Masculine weak nominative after a fronted time; dative feminine with an adjective. */
    s = referent(AD_SYNTH_LOCATED, AD_MOOD_STATEMENT, OBJ(AD_DET_THE, 0, "black", "dog"));
    expect(when(at(s, "in front of", LOC(AD_DET_THE, 0, "red", "door")), "in the afternoon"),
           "In the afternoon the black dog is in front of the red door.",
           "Am Nachmittag ist der schwarze Hund vor der roten Tür.",
           "那只黑色的狗下午在红色的门前面。");
    s = referent(AD_SYNTH_LOCATED, AD_MOOD_QUESTION, OBJ(AD_DET_POSS, POSS("their"), NULL, "boat"));
    expect(at(s, "next to", LOC(AD_DET_THE_PL, 0, NULL, "tree")),
           "Is their boat next to the trees?", "Ist ihr Boot neben den Bäumen?",
           "他们的船在树旁边吗？");
    s = referent(AD_SYNTH_LOCATED, AD_MOOD_WHERE, OBJ(AD_DET_THE, 0, "green", "bus"));
    expect(s, "Where is the green bus?", "Wo ist der grüne Bus?", "那辆绿色的公共汽车在哪里？");
    s = referent(AD_SYNTH_LOCATED, AD_MOOD_WHERE, DRINK(AD_DET_THE, 0, "cup", "juice"));
    expect(s, "Where is the cup of juice?", "Wo ist die Tasse Saft?", "那杯果汁在哪里？");

    s = referent(AD_SYNTH_COLOUR, AD_MOOD_STATEMENT, OBJ(AD_DET_THE, 0, NULL, "dog"));
    s.colour = L(AD_SYNTH_COLOURS, "brown");
    expect(s, "The dog is brown.", "Der Hund ist braun.", "那只狗是棕色的。");
    s = referent(AD_SYNTH_COLOUR, AD_MOOD_QUESTION, OBJ(AD_DET_POSS, POSS("your"), NULL, "jacket"));
    s.colour = L(AD_SYNTH_COLOURS, "grey");
    expect(s, "Is your jacket grey?", "Ist deine Jacke grau?", "你的夹克是灰色的吗？");
    s = referent(AD_SYNTH_COLOUR, AD_MOOD_NEGATION, OBJ(AD_DET_THE_PL, 0, NULL, "snake"));
    s.colour = L(AD_SYNTH_COLOURS, "green");
    expect(s, "The snakes are not green.", "Die Schlangen sind nicht grün.", "那些蛇不是绿色的。");
    s = referent(AD_SYNTH_COLOUR, AD_MOOD_STATEMENT, OBJ(AD_DET_POSS_PL, POSS("our"), NULL, "car"));
    s.colour = L(AD_SYNTH_COLOURS, "white");
    expect(s, "Our cars are white.", "Unsere Autos sind weiß.", "我们的汽车是白色的。");
}

static void test_numbers(void) {
    static const struct {
        int n;
        const char *en, *de, *zh;
    } cases[] = {
        {2, "two", "zwei", "两"},
        {10, "ten", "zehn", "十"},
        {11, "eleven", "elf", "十一"},
        {17, "seventeen", "siebzehn", "十七"},
        {20, "twenty", "zwanzig", "二十"},
        {22, "twenty-two", "zweiundzwanzig", "二十二"},
        {31, "thirty-one", "einunddreißig", "三十一"},
        {56, "fifty-six", "sechsundfünfzig", "五十六"},
        {67, "sixty-seven", "siebenundsechzig", "六十七"},
        {80, "eighty", "achtzig", "八十"},
        {99, "ninety-nine", "neunundneunzig", "九十九"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char en[64], de[64], zh[64];
        ad_synth_number_en(cases[i].n, en, sizeof en);
        ad_synth_number_de(cases[i].n, de, sizeof de);
        ad_synth_number_zh(cases[i].n, zh, sizeof zh);
        CHECK_MSG(strcmp(en, cases[i].en) == 0, "%d: %s", cases[i].n, en);
        CHECK_MSG(strcmp(de, cases[i].de) == 0, "%d: %s", cases[i].n, de);
        CHECK_MSG(strcmp(zh, cases[i].zh) == 0, "%d: %s", cases[i].n, zh);
    }
    /* Times: German half hours name the next hour, Chinese hours use 两 and 一. */
    ad_synth_spec s =
        when(svo(AD_MOOD_STATEMENT, "I", "see", OBJ(AD_DET_A, 0, NULL, "bus")), "at half past two");
    expect(s, "At half past two I see a bus.", "Um halb drei sehe ich einen Bus.",
           "我两点半看到一辆公共汽车。");
    s = when(svo(AD_MOOD_STATEMENT, "I", "see", OBJ(AD_DET_A, 0, NULL, "bus")), "at two o'clock");
    expect(s, "At two o'clock I see a bus.", "Um zwei Uhr sehe ich einen Bus.",
           "我两点看到一辆公共汽车。");
    s = when(svo(AD_MOOD_STATEMENT, "I", "see", OBJ(AD_DET_A, 0, NULL, "bus")), "at night");
    expect(s, "At night I see a bus.", "In der Nacht sehe ich einen Bus.",
           "我夜里看到一辆公共汽车。");
}

static void test_invalid_specs(void) {
    ad_synth_text t;
    ad_synth_spec s = svo(AD_MOOD_STATEMENT, "I", "see", OBJ(AD_DET_NUMBER, 100, NULL, "car"));
    CHECK_FAILS_WITH(ad_synth_render(&s, &t), "outside 2..99");
    s = svo(AD_MOOD_QUESTION, "I", "see", OBJ(AD_DET_A, 0, NULL, "car"));
    CHECK_FAILS_WITH(ad_synth_render(&s, &t), "'I'");
    s = referent(AD_SYNTH_THERE, AD_MOOD_STATEMENT, OBJ(AD_DET_A, 0, NULL, "car"));
    CHECK_FAILS_WITH(ad_synth_render(&s, &t), "needs a place");
    s = at(s, "on", LOC(AD_DET_THE, 0, NULL, "garden"));
    CHECK_FAILS_WITH(ad_synth_render(&s, &t), "'on the garden'");
    s = svo(AD_MOOD_STATEMENT, "I", "drink", DRINK(AD_DET_A, 0, NULL, "tea"));
    CHECK_FAILS_WITH(ad_synth_render(&s, &t), "needs a container");
    s = svo(AD_MOOD_NEGATION, "I", "see", OBJ(AD_DET_A, 0, NULL, "car"));
    CHECK_FAILS_WITH(ad_synth_render(&s, &t), "negative determiners");
    s.object.noun = 1000;
    CHECK_FAILS_WITH(ad_synth_render(&s, &t), "out of range");
    CHECK(ad_synth_lookup(AD_SYNTH_NOUNS, "spaceship") == -1);
}

static int by_english(const void *a, const void *b) {
    return strcmp(((const ad_synth_text *)a)->en, ((const ad_synth_text *)b)->en);
}

#define N_PROBE 30000

static void test_sampler_properties(void) {
    ad_rng rng;
    ad_rng_init(&rng, 12345, 7);
    ad_synth_text *all = calloc(N_PROBE, sizeof *all);
    CHECK(all != NULL);
    if (!all) return;
    int max_words = 0, failures = 0, bad_form = 0;
    for (int i = 0; i < N_PROBE; i++) {
        ad_synth_spec s;
        ad_synth_sample(&rng, &s);
        if (ad_synth_render(&s, &all[i]) < 0 && failures++ < 5)
            CHECK_MSG(0, "sampled spec does not render: %s", ad_error());
        int words = 1;
        for (const char *p = all[i].en; *p; p++)
            words += *p == ' ';
        if (words > max_words) max_words = words;
        /* No doubled spaces, unfinished sentences or spaces in Chinese. */
        size_t ne = strlen(all[i].en), nd = strlen(all[i].de);
        if (strstr(all[i].en, "  ") || strstr(all[i].de, "  ") || strchr(all[i].zh, ' ') ||
            ne == 0 || nd == 0 || all[i].en[ne - 1] != all[i].de[nd - 1] ||
            !(all[i].en[0] >= 'A' && all[i].en[0] <= 'Z') ||
            !(all[i].de[0] >= 'A' && all[i].de[0] <= 'Z'))
            if (bad_form++ < 5)
                CHECK_MSG(0, "malformed: '%s' / '%s' / '%s'", all[i].en, all[i].de, all[i].zh);
    }
    CHECK(failures == 0 && bad_form == 0);
    CHECK_MSG(max_words <= 20, "longest sentence has %d words", max_words);
    /* English -> (German, Chinese) is a function: equal English never has two translations. */
    qsort(all, N_PROBE, sizeof *all, by_english);
    int distinct = 1, conflicts = 0;
    for (int i = 1; i < N_PROBE; i++) {
        if (strcmp(all[i].en, all[i - 1].en) != 0) {
            distinct++;
            continue;
        }
        if ((strcmp(all[i].de, all[i - 1].de) != 0 || strcmp(all[i].zh, all[i - 1].zh) != 0) &&
            conflicts++ < 5)
            CHECK_MSG(0, "'%s' has two translations: '%s'/'%s' and '%s'/'%s'", all[i].en, all[i].de,
                      all[i].zh, all[i - 1].de, all[i - 1].zh);
    }
    CHECK(conflicts == 0);
    /* A rich grammar: most draws are new (short colour sentences repeat most). */
    CHECK_MSG(distinct > N_PROBE * 8 / 10, "only %d distinct of %d draws", distinct, N_PROBE);
    printf("sampler: %d distinct of %d draws, longest %d words\n", distinct, N_PROBE, max_words);
    free(all);
}

static void test_splits(void) {
    int counts[AD_SYNTH_SPLITS] = {3000, 300, 300};
    ad_synth_text *a[AD_SYNTH_SPLITS], *b[AD_SYNTH_SPLITS];
    CHECK_OK(ad_synth_make_splits(42, counts, a));
    CHECK_OK(ad_synth_make_splits(42, counts, b));
    for (int s = 0; s < AD_SYNTH_SPLITS; s++)
        CHECK(a[s] && b[s] && memcmp(a[s], b[s], sizeof(ad_synth_text) * (size_t)counts[s]) == 0);
    /* Eval depends only on the seed and its own size. */
    int other[AD_SYNTH_SPLITS] = {10, 20, 300};
    ad_synth_text *c[AD_SYNTH_SPLITS];
    CHECK_OK(ad_synth_make_splits(42, other, c));
    CHECK(memcmp(a[AD_SYNTH_EVAL], c[AD_SYNTH_EVAL], sizeof(ad_synth_text) * 300) == 0);
    /* A different seed gives different sentences. */
    ad_synth_text *d[AD_SYNTH_SPLITS];
    CHECK_OK(ad_synth_make_splits(43, other, d));
    CHECK(memcmp(c[AD_SYNTH_EVAL], d[AD_SYNTH_EVAL], sizeof(ad_synth_text) * 300) != 0);
    /* Distinct within and across splits (quadratic on 3600 sentences is cheap enough). */
    int total = counts[0] + counts[1] + counts[2], dup = 0;
    const char **en = calloc((size_t)total, sizeof *en);
    int k = 0;
    for (int s = 0; s < AD_SYNTH_SPLITS; s++)
        for (int i = 0; i < counts[s]; i++)
            en[k++] = a[s][i].en;
    for (int i = 0; i < total; i++)
        for (int j = i + 1; j < total; j++)
            dup += strcmp(en[i], en[j]) == 0;
    CHECK_MSG(dup == 0, "%d duplicate sentences", dup);
    free(en);
    /* Across seeds too: no train sentence of seed 43 is an eval or dev sentence of seed 42 (a
     * teacher trained on one corpus is scored on another's eval split). */
    int big[AD_SYNTH_SPLITS] = {3000, 300, 300};
    ad_synth_text *f[AD_SYNTH_SPLITS];
    CHECK_OK(ad_synth_make_splits(43, big, f));
    int leaked = 0;
    for (int i = 0; f[AD_SYNTH_TRAIN] && i < big[AD_SYNTH_TRAIN]; i++)
        for (int s = AD_SYNTH_DEV; s <= AD_SYNTH_EVAL; s++)
            for (int j = 0; a[s] && j < counts[s]; j++)
                leaked += strcmp(f[AD_SYNTH_TRAIN][i].en, a[s][j].en) == 0;
    CHECK_MSG(leaked == 0, "%d train sentences of seed 43 are dev/eval sentences of seed 42",
              leaked);
    for (int s = 0; s < AD_SYNTH_SPLITS; s++)
        free(f[s]);
    int too_many[AD_SYNTH_SPLITS] = {1, 1, -1};
    ad_synth_text *e[AD_SYNTH_SPLITS];
    CHECK_FAILS_WITH(ad_synth_make_splits(1, too_many, e), "negative");
    for (int s = 0; s < AD_SYNTH_SPLITS; s++) {
        free(a[s]);
        free(b[s]);
        free(c[s]);
        free(d[s]);
    }
}

int main(void) {
    RUN(test_svo_statements);
    RUN(test_svo_negation_and_questions);
    RUN(test_there_is);
    RUN(test_copula);
    RUN(test_numbers);
    RUN(test_invalid_specs);
    RUN(test_sampler_properties);
    RUN(test_splits);
    return test_report();
}
