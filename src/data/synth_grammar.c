/* The synthetic translation grammar: word tables and the rules that render one sentence spec
 * in English, German and Chinese (see synth_grammar.h for the conventions). */
#include "data/synth_grammar.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* ------------------------------------------------------------------ word tables */

enum { P_ICH, P_DU, P_ER, P_WIR, P_IHR, P_SIE }; /* German verb persons */

typedef struct {
    const char *en, *de, *zh;
    int person;
} subject_entry;

static const subject_entry subjects[] = {
    {"I", "ich", "我", P_ICH},
    {"you", "du", "你", P_DU},
    {"he", "er", "他", P_ER},
    {"she", "sie", "她", P_ER},
    {"we", "wir", "我们", P_WIR},
    {"they", "sie", "他们", P_SIE},
    {"Anna", "Anna", "安娜", P_ER},
    {"Tom", "Tom", "汤姆", P_ER},
    {"Maria", "Maria", "玛丽亚", P_ER},
    {"Peter", "Peter", "彼得", P_ER},
    {"my brother", "mein Bruder", "我哥哥", P_ER},
    {"my sister", "meine Schwester", "我姐姐", P_ER},
    {"the teacher", "der Lehrer", "老师", P_ER},
    {"the children", "die Kinder", "孩子们", P_SIE},
    {"my parents", "meine Eltern", "我父母", P_SIE},
};

/* Noun categories, for which verb takes which object. */
enum {
    C_VEHICLE = 1 << 0,
    C_BOOK = 1 << 1,
    C_ANIMAL = 1 << 2,
    C_FURNITURE = 1 << 3,
    C_THING = 1 << 4,
    C_FOOD = 1 << 5,
    C_PLANT = 1 << 6,
    C_FIXED = 1 << 7, /* houses and trees: not found, not carried */
    C_DRINK = 1 << 8,
    C_ALL = (1 << 9) - 1,
};

enum { PLACE_NONE, PLACE_SETTING, PLACE_ANY };

typedef struct {
    const char *en, *en3;
    const char *de[6];
    const char *zh, *zh_neg;
    unsigned cats;
    int place;
} verb_entry;

static const verb_entry verbs[] = {
    {"see",
     "sees",
     {"sehe", "siehst", "sieht", "sehen", "seht", "sehen"},
     "看到",
     "没有看到",
     C_ALL,
     PLACE_ANY},
    {"find",
     "finds",
     {"finde", "findest", "findet", "finden", "findet", "finden"},
     "找到",
     "没有找到",
     C_ALL & ~C_FIXED & ~C_DRINK,
     PLACE_ANY},
    {"have",
     "has",
     {"habe", "hast", "hat", "haben", "habt", "haben"},
     "有",
     "没有",
     C_ALL,
     PLACE_ANY},
    {"buy",
     "buys",
     {"kaufe", "kaufst", "kauft", "kaufen", "kauft", "kaufen"},
     "买",
     "不买",
     C_ALL,
     PLACE_SETTING},
    {"sell",
     "sells",
     {"verkaufe", "verkaufst", "verkauft", "verkaufen", "verkauft", "verkaufen"},
     "卖",
     "不卖",
     C_ALL,
     PLACE_SETTING},
    {"need",
     "needs",
     {"brauche", "brauchst", "braucht", "brauchen", "braucht", "brauchen"},
     "需要",
     "不需要",
     C_ALL,
     PLACE_NONE},
    {"like",
     "likes",
     {"mag", "magst", "mag", "mögen", "mögt", "mögen"},
     "喜欢",
     "不喜欢",
     C_ALL,
     PLACE_NONE},
    {"want",
     "wants",
     {"will", "willst", "will", "wollen", "wollt", "wollen"},
     "想要",
     "不想要",
     C_ALL,
     PLACE_NONE},
    {"drink",
     "drinks",
     {"trinke", "trinkst", "trinkt", "trinken", "trinkt", "trinken"},
     "喝",
     "不喝",
     C_DRINK,
     PLACE_SETTING},
    {"read",
     "reads",
     {"lese", "liest", "liest", "lesen", "lest", "lesen"},
     "读",
     "不读",
     C_BOOK,
     PLACE_SETTING},
    {"eat",
     "eats",
     {"esse", "isst", "isst", "essen", "esst", "essen"},
     "吃",
     "不吃",
     C_FOOD,
     PLACE_SETTING},
};

typedef struct {
    const char *en, *de, *zh;
} colour_entry;

static const colour_entry colours[] = {
    {"red", "rot", "红色"},     {"blue", "blau", "蓝色"},     {"green", "grün", "绿色"},
    {"yellow", "gelb", "黄色"}, {"black", "schwarz", "黑色"}, {"white", "weiß", "白色"},
    {"brown", "braun", "棕色"}, {"grey", "grau", "灰色"},
};
enum {
    K_RED = 1,
    K_BLUE = 2,
    K_GREEN = 4,
    K_YELLOW = 8,
    K_BLACK = 16,
    K_WHITE = 32,
    K_BROWN = 64,
    K_GREY = 128,
    K_ALL = 255,
};

enum { G_M, G_F, G_N, G_PL }; /* German gender, and the plural column of the tables */

enum { PR_ON, PR_IN, PR_UNDER, PR_NEXT, PR_FRONT, PR_BEHIND, PR_AT };

typedef struct {
    const char *en, *de, *zh_loc;
} prep_entry;

static const prep_entry preps[] = {
    {"on", "auf", "上"},
    {"in", "in", "里"},
    {"under", "unter", "下面"},
    {"next to", "neben", "旁边"},
    {"in front of", "vor", "前面"},
    {"behind", "hinter", "后面"},
    {"at", "an", ""},
};

/* Objects and places share one shape; the fields after zh/cl matter for one table or the other.
 * size: 0 hand-held, 1 up to a chair or a dog, 2 a car, a house, a tree. */
typedef struct {
    const char *en, *en_pl;
    int gender;
    const char *de, *de_pl;
    const char *zh, *cl;
    unsigned cat;     /* objects */
    unsigned colours; /* which colours are plausible, 0: none */
    int size;
    unsigned preps;   /* places: bit per PR_* */
    int setting_prep; /* places where one buys, reads, eats: the preposition; -1 otherwise */
    int hold;         /* places: the largest size that fits on/in/under/at it */
    int plural_ok;    /* places: "next to two tables" makes sense */
} noun_entry;

#define B(p) (1u << (p))

static const noun_entry nouns[] = {
    {"car", "cars", G_N, "Auto", "Autos", "汽车", "辆", C_VEHICLE, K_ALL, 2, 0, 0, 0, 0},
    {"bicycle", "bicycles", G_N, "Fahrrad", "Fahrräder", "自行车", "辆", C_VEHICLE, K_ALL, 1, 0, 0,
     0, 0},
    {"bus", "buses", G_M, "Bus", "Busse", "公共汽车", "辆", C_VEHICLE, K_ALL, 2, 0, 0, 0, 0},
    {"boat", "boats", G_N, "Boot", "Boote", "船", "艘", C_VEHICLE, K_ALL, 2, 0, 0, 0, 0},
    {"book", "books", G_N, "Buch", "Bücher", "书", "本", C_BOOK, K_ALL, 0, 0, 0, 0, 0},
    {"notebook", "notebooks", G_N, "Heft", "Hefte", "笔记本", "本", C_BOOK, K_ALL, 0, 0, 0, 0, 0},
    {"letter", "letters", G_M, "Brief", "Briefe", "信", "封", C_BOOK, 0, 0, 0, 0, 0, 0},
    {"dog", "dogs", G_M, "Hund", "Hunde", "狗", "只", C_ANIMAL,
     K_BLACK | K_WHITE | K_BROWN | K_GREY, 1, 0, 0, 0, 0},
    {"cat", "cats", G_F, "Katze", "Katzen", "猫", "只", C_ANIMAL,
     K_BLACK | K_WHITE | K_BROWN | K_GREY, 1, 0, 0, 0, 0},
    {"bird", "birds", G_M, "Vogel", "Vögel", "鸟", "只", C_ANIMAL, K_ALL, 0, 0, 0, 0, 0},
    {"mouse", "mice", G_F, "Maus", "Mäuse", "老鼠", "只", C_ANIMAL, K_WHITE | K_BROWN | K_GREY, 0,
     0, 0, 0, 0},
    {"horse", "horses", G_N, "Pferd", "Pferde", "马", "匹", C_ANIMAL, K_BLACK | K_WHITE | K_BROWN,
     2, 0, 0, 0, 0},
    {"snake", "snakes", G_F, "Schlange", "Schlangen", "蛇", "条", C_ANIMAL,
     K_GREEN | K_BLACK | K_BROWN | K_YELLOW, 1, 0, 0, 0, 0},
    {"chair", "chairs", G_M, "Stuhl", "Stühle", "椅子", "把", C_FURNITURE, K_ALL, 1, 0, 0, 0, 0},
    {"table", "tables", G_M, "Tisch", "Tische", "桌子", "张", C_FURNITURE, K_ALL, 1, 0, 0, 0, 0},
    {"bed", "beds", G_N, "Bett", "Betten", "床", "张", C_FURNITURE, K_ALL, 2, 0, 0, 0, 0},
    {"lamp", "lamps", G_F, "Lampe", "Lampen", "灯", "盏", C_FURNITURE, K_ALL, 1, 0, 0, 0, 0},
    {"key", "keys", G_M, "Schlüssel", "Schlüssel", "钥匙", "把", C_THING, K_ALL, 0, 0, 0, 0, 0},
    {"umbrella", "umbrellas", G_M, "Regenschirm", "Regenschirme", "雨伞", "把", C_THING, K_ALL, 0,
     0, 0, 0, 0},
    {"knife", "knives", G_N, "Messer", "Messer", "刀", "把", C_THING, 0, 0, 0, 0, 0, 0},
    {"ticket", "tickets", G_F, "Fahrkarte", "Fahrkarten", "票", "张", C_THING, K_ALL, 0, 0, 0, 0,
     0},
    {"photo", "photos", G_N, "Foto", "Fotos", "照片", "张", C_THING, 0, 0, 0, 0, 0, 0},
    {"cup", "cups", G_F, "Tasse", "Tassen", "杯子", "个", C_THING, K_ALL, 0, 0, 0, 0, 0},
    {"scarf", "scarves", G_M, "Schal", "Schals", "围巾", "条", C_THING, K_ALL, 0, 0, 0, 0, 0},
    {"ball", "balls", G_M, "Ball", "Bälle", "球", "个", C_THING, K_ALL, 0, 0, 0, 0, 0},
    {"bag", "bags", G_F, "Tasche", "Taschen", "包", "个", C_THING, K_ALL, 0, 0, 0, 0, 0},
    {"box", "boxes", G_F, "Kiste", "Kisten", "箱子", "个", C_THING, K_ALL, 1, 0, 0, 0, 0},
    {"shirt", "shirts", G_N, "Hemd", "Hemden", "衬衫", "件", C_THING, K_ALL, 0, 0, 0, 0, 0},
    {"jacket", "jackets", G_F, "Jacke", "Jacken", "夹克", "件", C_THING, K_ALL, 0, 0, 0, 0, 0},
    {"pen", "pens", G_M, "Stift", "Stifte", "笔", "支", C_THING, K_ALL, 0, 0, 0, 0, 0},
    {"hat", "hats", G_M, "Hut", "Hüte", "帽子", "顶", C_THING, K_ALL, 0, 0, 0, 0, 0},
    {"computer", "computers", G_M, "Computer", "Computer", "电脑", "台", C_THING,
     K_BLACK | K_WHITE | K_GREY, 1, 0, 0, 0, 0},
    {"phone", "phones", G_N, "Telefon", "Telefone", "电话", "部", C_THING,
     K_BLACK | K_WHITE | K_GREY | K_RED | K_BLUE, 0, 0, 0, 0, 0},
    {"flower", "flowers", G_F, "Blume", "Blumen", "花", "朵", C_PLANT,
     K_RED | K_BLUE | K_YELLOW | K_WHITE, 0, 0, 0, 0, 0},
    {"tree", "trees", G_M, "Baum", "Bäume", "树", "棵", C_FIXED, K_GREEN, 2, 0, 0, 0, 0},
    {"house", "houses", G_N, "Haus", "Häuser", "房子", "座", C_FIXED,
     K_RED | K_BLUE | K_YELLOW | K_WHITE | K_GREY, 2, 0, 0, 0, 0},
    {"apple", "apples", G_M, "Apfel", "Äpfel", "苹果", "个", C_FOOD, K_RED | K_GREEN | K_YELLOW, 0,
     0, 0, 0, 0},
    {"banana", "bananas", G_F, "Banane", "Bananen", "香蕉", "根", C_FOOD, K_YELLOW | K_GREEN, 0, 0,
     0, 0, 0},
    {"egg", "eggs", G_N, "Ei", "Eier", "鸡蛋", "个", C_FOOD, K_WHITE | K_BROWN, 0, 0, 0, 0, 0},
    {"cake", "cakes", G_M, "Kuchen", "Kuchen", "蛋糕", "个", C_FOOD, 0, 0, 0, 0, 0, 0},
    /* Drinks are mass nouns: counted through a container, negated bare. */
    {"tea", NULL, G_M, "Tee", NULL, "茶", NULL, C_DRINK, 0, 0, 0, 0, 0, 0},
    {"coffee", NULL, G_M, "Kaffee", NULL, "咖啡", NULL, C_DRINK, 0, 0, 0, 0, 0, 0},
    {"water", NULL, G_N, "Wasser", NULL, "水", NULL, C_DRINK, 0, 0, 0, 0, 0, 0},
    {"milk", NULL, G_F, "Milch", NULL, "牛奶", NULL, C_DRINK, 0, 0, 0, 0, 0, 0},
    {"juice", NULL, G_M, "Saft", NULL, "果汁", NULL, C_DRINK, 0, 0, 0, 0, 0, 0},
};

#define SPOT (B(PR_NEXT) | B(PR_FRONT) | B(PR_BEHIND))

static const noun_entry locations[] = {
    {"table", "tables", G_M, "Tisch", "Tische", "桌子", "张", 0, K_ALL, 1,
     B(PR_ON) | B(PR_UNDER) | SPOT, -1, 1, 1},
    {"chair", "chairs", G_M, "Stuhl", "Stühle", "椅子", "把", 0, K_ALL, 1,
     B(PR_ON) | B(PR_UNDER) | SPOT, -1, 0, 1},
    {"bed", "beds", G_N, "Bett", "Betten", "床", "张", 0, K_ALL, 1,
     B(PR_ON) | B(PR_UNDER) | B(PR_NEXT) | B(PR_FRONT), -1, 1, 1},
    {"box", "boxes", G_F, "Kiste", "Kisten", "箱子", "个", 0, K_ALL, 1,
     B(PR_IN) | B(PR_ON) | B(PR_NEXT) | B(PR_BEHIND), -1, 0, 1},
    {"car", "cars", G_N, "Auto", "Autos", "汽车", "辆", 0, K_ALL, 2, B(PR_IN) | SPOT, PR_IN, 1, 1},
    {"house", "houses", G_N, "Haus", "Häuser", "房子", "座", 0,
     K_RED | K_BLUE | K_YELLOW | K_WHITE | K_GREY, 2, B(PR_IN) | SPOT, PR_IN, 1, 1},
    {"tree", "trees", G_M, "Baum", "Bäume", "树", "棵", 0, 0, 2, B(PR_UNDER) | SPOT, -1, 1, 1},
    {"window", "windows", G_N, "Fenster", "Fenster", "窗户", "扇", 0, 0, 1,
     B(PR_NEXT) | B(PR_FRONT), -1, 0, 0},
    {"door", "doors", G_F, "Tür", "Türen", "门", "扇", 0, K_ALL, 1, SPOT, -1, 0, 0},
    {"garden", "gardens", G_M, "Garten", "Gärten", "花园", "个", 0, 0, 2, B(PR_IN), PR_IN, 2, 0},
    {"kitchen", "kitchens", G_F, "Küche", "Küchen", "厨房", "间", 0, 0, 2, B(PR_IN), PR_IN, 1, 0},
    {"park", "parks", G_M, "Park", "Parks", "公园", "个", 0, 0, 2, B(PR_IN), PR_IN, 2, 0},
    {"school", "schools", G_F, "Schule", "Schulen", "学校", "所", 0, 0, 2, B(PR_IN) | SPOT, PR_IN,
     1, 0},
    {"shop", "shops", G_M, "Laden", "Läden", "商店", "家", 0, 0, 2,
     B(PR_IN) | B(PR_NEXT) | B(PR_FRONT), PR_IN, 1, 0},
    {"office", "offices", G_N, "Büro", "Büros", "办公室", "间", 0, 0, 2, B(PR_IN), PR_IN, 1, 0},
    {"street", "streets", G_F, "Straße", "Straßen", "街", "条", 0, 0, 2, B(PR_ON), PR_ON, 2, 0},
    {"station", "stations", G_M, "Bahnhof", "Bahnhöfe", "火车站", "个", 0, 0, 2, B(PR_AT), PR_AT, 2,
     0},
    {"airport", "airports", G_M, "Flughafen", "Flughäfen", "机场", "个", 0, 0, 2, B(PR_AT), PR_AT,
     2, 0},
};

typedef struct {
    const char *en, *en_pl;
    int gender;
    const char *de, *de_pl, *cl;
} container_entry;

static const container_entry containers[] = {
    {"cup", "cups", G_F, "Tasse", "Tassen", "杯"},
    {"bottle", "bottles", G_F, "Flasche", "Flaschen", "瓶"},
};

typedef struct {
    const char *en, *de, *zh;
} possessor_entry;

static const possessor_entry possessors[] = {
    {"my", "mein", "我的"}, {"your", "dein", "你的"},   {"his", "sein", "他的"},
    {"her", "ihr", "她的"}, {"our", "unser", "我们的"}, {"their", "ihr", "他们的"},
};

/* Times: 12 full hours, 12 half hours, 4 parts of the day, 7 days, today, every day. */
enum {
    T_HOURS = 0,
    T_HALVES = 12,
    T_PARTS = 24,
    T_DAYS = 28,
    T_TODAY = 35,
    T_EVERY_DAY = 36,
    T_COUNT = 37
};

static const char *const part_en[] = {"in the morning", "in the afternoon", "in the evening",
                                      "at night"};
static const char *const part_de[] = {"am Morgen", "am Nachmittag", "am Abend", "in der Nacht"};
static const char *const part_zh[] = {"早上", "下午", "晚上", "夜里"};
static const char *const day_en[] = {"Monday", "Tuesday",  "Wednesday", "Thursday",
                                     "Friday", "Saturday", "Sunday"};
static const char *const day_de[] = {"Montag",  "Dienstag", "Mittwoch", "Donnerstag",
                                     "Freitag", "Samstag",  "Sonntag"};
static const char *const day_zh[] = {"星期一", "星期二", "星期三", "星期四",
                                     "星期五", "星期六", "星期天"};

/* ------------------------------------------------------------------ numbers */

static const char *const en_units[] = {"zero",    "one",     "two",       "three",    "four",
                                       "five",    "six",     "seven",     "eight",    "nine",
                                       "ten",     "eleven",  "twelve",    "thirteen", "fourteen",
                                       "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"};
static const char *const en_tens[] = {"",      "",      "twenty",  "thirty", "forty",
                                      "fifty", "sixty", "seventy", "eighty", "ninety"};
static const char *const de_units[] = {"null",     "eins",     "zwei",     "drei",     "vier",
                                       "fünf",     "sechs",    "sieben",   "acht",     "neun",
                                       "zehn",     "elf",      "zwölf",    "dreizehn", "vierzehn",
                                       "fünfzehn", "sechzehn", "siebzehn", "achtzehn", "neunzehn"};
static const char *const de_tens[] = {"",        "",        "zwanzig", "dreißig", "vierzig",
                                      "fünfzig", "sechzig", "siebzig", "achtzig", "neunzig"};
static const char *const zh_digits[] = {"零", "一", "二", "三", "四", "五", "六", "七", "八", "九"};

void ad_synth_number_en(int n, char *buf, int size) {
    if (n < 1 || n > 99) { /* the grammar never asks; keep the tables in bounds */
        snprintf(buf, (size_t)size, "?");
        return;
    }
    if (n < 20)
        snprintf(buf, (size_t)size, "%s", en_units[n]);
    else if (n % 10 == 0)
        snprintf(buf, (size_t)size, "%s", en_tens[n / 10]);
    else
        snprintf(buf, (size_t)size, "%s-%s", en_tens[n / 10], en_units[n % 10]);
}

void ad_synth_number_de(int n, char *buf, int size) {
    if (n < 1 || n > 99) { /* the grammar never asks; keep the tables in bounds */
        snprintf(buf, (size_t)size, "?");
        return;
    }
    if (n < 20)
        snprintf(buf, (size_t)size, "%s", de_units[n]);
    else if (n % 10 == 0)
        snprintf(buf, (size_t)size, "%s", de_tens[n / 10]);
    else /* "einundzwanzig": the unit before "und" drops the s of "eins" */
        snprintf(buf, (size_t)size, "%sund%s", n % 10 == 1 ? "ein" : de_units[n % 10],
                 de_tens[n / 10]);
}

void ad_synth_number_zh(int n, char *buf, int size) {
    if (n < 1 || n > 99) { /* the grammar never asks; keep the tables in bounds */
        snprintf(buf, (size_t)size, "?");
        return;
    }
    if (n == 2)
        snprintf(buf, (size_t)size, "两"); /* counting form before a classifier */
    else if (n < 10)
        snprintf(buf, (size_t)size, "%s", zh_digits[n]);
    else if (n < 20)
        snprintf(buf, (size_t)size, "十%s", n % 10 ? zh_digits[n % 10] : "");
    else
        snprintf(buf, (size_t)size, "%s十%s", zh_digits[n / 10], n % 10 ? zh_digits[n % 10] : "");
}

/* ------------------------------------------------------------------ sentence builders */

typedef struct {
    char *buf;
    size_t len;
    bool overflow;
} sb;

static void sb_raw(sb *s, const char *text) {
    size_t n = strlen(text);
    if (s->len + n + 1 > AD_SYNTH_TEXT_MAX) {
        s->overflow = true;
        return;
    }
    memcpy(s->buf + s->len, text, n + 1);
    s->len += n;
}

/* A word, separated by one space from what precedes it. */
static void sb_word(sb *s, const char *word) {
    if (!word || !*word) return;
    if (s->len) sb_raw(s, " ");
    sb_raw(s, word);
}

static void sb_cat(sb *s, const char *a, const char *b) {
    char w[128];
    snprintf(w, sizeof w, "%s%s", a, b);
    sb_word(s, w);
}

/* English and German sentences start upper case; every word that can start one is ASCII. */
static void capitalize(char *text) {
    if (text[0] >= 'a' && text[0] <= 'z') text[0] = (char)(text[0] - 'a' + 'A');
}

enum { NOM, ACC, DAT };

static const char *const de_def[3][4] = {
    {"der", "die", "das", "die"}, {"den", "die", "das", "die"}, {"dem", "der", "dem", "den"}};
/* Endings of ein/kein/mein (the plural column for kein/mein). */
static const char *const de_ein[3][4] = {
    {"", "e", "", "e"}, {"en", "e", "", "e"}, {"em", "er", "em", "en"}};
static const char *const de_weak[3][4] = {
    {"e", "e", "e", "en"}, {"en", "e", "e", "en"}, {"en", "en", "en", "en"}};
static const char *const de_mixed[3][4] = {
    {"er", "e", "es", "en"}, {"en", "e", "es", "en"}, {"en", "en", "en", "en"}};
static const char *const de_strong_pl[3] = {"e", "e", "en"};

static bool det_plural(ad_synth_det d) {
    return d == AD_DET_THE_PL || d == AD_DET_NUMBER || d == AD_DET_NEG_PL || d == AD_DET_POSS_PL ||
           d == AD_DET_HOW_MANY;
}

static bool is_drink(const noun_entry *n) {
    return n->cat == C_DRINK;
}

/* Dative plural adds -n unless the plural already ends in -n or -s ("den Kindern", "den Autos"). */
static void de_noun_form(const char *sg, const char *pl, bool plural, int cas, char *out,
                         size_t size) {
    if (!plural) {
        snprintf(out, size, "%s", sg);
        return;
    }
    size_t n = strlen(pl);
    bool add_n = cas == DAT && n && pl[n - 1] != 'n' && pl[n - 1] != 's';
    snprintf(out, size, "%s%s", pl, add_n ? "n" : "");
}

/* `a` or `an` before the next word of an English noun phrase. */
static const char *en_indef(const char *next) {
    return strchr("aeiou", next[0]) ? "an" : "a";
}

/* English noun phrase. `there`: negative determiners read "no" (there is no X), else "a"/"any". */
static void en_np(sb *o, const ad_synth_np *p, const noun_entry *table, bool there) {
    const noun_entry *n = &table[p->noun];
    bool plural = det_plural(p->det);
    const char *colour = p->colour >= 0 ? colours[p->colour].en : NULL;
    char num[32];
    if (is_drink(n)) {
        if (p->det == AD_DET_NEG) {
            if (there) sb_word(o, "no");
            sb_word(o, n->en);
            return;
        }
        const container_entry *c = &containers[p->container];
        switch (p->det) {
        case AD_DET_A: sb_word(o, en_indef(c->en)); break;
        case AD_DET_THE: sb_word(o, "the"); break;
        case AD_DET_NUMBER:
            ad_synth_number_en(p->number, num, sizeof num);
            sb_word(o, num);
            break;
        case AD_DET_HOW_MANY: sb_word(o, "how many"); break;
        default: break;
        }
        sb_word(o, plural ? c->en_pl : c->en);
        sb_word(o, "of");
        sb_word(o, n->en);
        return;
    }
    const char *head = colour ? colour : n->en;
    switch (p->det) {
    case AD_DET_A: sb_word(o, en_indef(head)); break;
    case AD_DET_THE:
    case AD_DET_THE_PL: sb_word(o, "the"); break;
    case AD_DET_NUMBER:
        ad_synth_number_en(p->number, num, sizeof num);
        sb_word(o, num);
        break;
    case AD_DET_NEG: sb_word(o, there ? "no" : en_indef(head)); break;
    case AD_DET_NEG_PL: sb_word(o, there ? "no" : "any"); break;
    case AD_DET_POSS:
    case AD_DET_POSS_PL: sb_word(o, possessors[p->possessor].en); break;
    case AD_DET_HOW_MANY: sb_word(o, "how many"); break;
    }
    sb_word(o, colour);
    sb_word(o, plural ? n->en_pl : n->en);
}

/* German noun phrase in a case. `no_article`: the article went into a contraction (im, am). */
static void de_np(sb *o, const ad_synth_np *p, const noun_entry *table, int cas, bool no_article) {
    const noun_entry *n = &table[p->noun];
    char word[128], num[32];
    if (is_drink(n) && p->det == AD_DET_NEG) { /* keinen Tee, kein Wasser, keine Milch */
        sb_cat(o, "kein", de_ein[cas][n->gender]);
        sb_word(o, n->de);
        return;
    }
    bool plural = det_plural(p->det);
    const container_entry *c = is_drink(n) ? &containers[p->container] : NULL;
    int g = plural ? G_PL : (c ? c->gender : n->gender);
    const char *const(*adj)[4] = NULL;
    switch (p->det) {
    case AD_DET_A:
        sb_cat(o, "ein", de_ein[cas][g]);
        adj = de_mixed;
        break;
    case AD_DET_NEG:
    case AD_DET_NEG_PL:
        sb_cat(o, "kein", de_ein[cas][g]);
        adj = de_mixed;
        break;
    case AD_DET_THE:
    case AD_DET_THE_PL:
        if (!no_article) sb_word(o, de_def[cas][g]);
        adj = de_weak;
        break;
    case AD_DET_POSS:
    case AD_DET_POSS_PL: sb_cat(o, possessors[p->possessor].de, de_ein[cas][g]); break;
    case AD_DET_NUMBER:
        ad_synth_number_de(p->number, num, sizeof num);
        sb_word(o, num);
        break;
    case AD_DET_HOW_MANY: sb_word(o, "wie viele"); break;
    }
    if (p->colour >= 0) {
        const char *ending = adj ? adj[cas][g] : de_strong_pl[cas];
        sb_cat(o, colours[p->colour].de, ending);
    }
    if (c) {
        /* The container is the head; the drink follows uninflected: "drei Tassen Tee". */
        de_noun_form(c->de, c->de_pl, plural, cas, word, sizeof word);
        sb_word(o, word);
        sb_word(o, n->de);
        return;
    }
    de_noun_form(n->de, n->de_pl, plural, cas, word, sizeof word);
    sb_word(o, word);
}

enum { ZH_REFERENT, ZH_PLACE };

/* Chinese noun phrase: a referent (object or subject: definite takes 那 + classifier) or a place
 * (definite is the bare noun). */
static void zh_np(sb *o, const ad_synth_np *p, const noun_entry *table, int role) {
    const noun_entry *n = &table[p->noun];
    char num[32];
    bool drink = is_drink(n);
    if (drink && p->det == AD_DET_NEG) {
        sb_raw(o, n->zh);
        return;
    }
    const char *cl = drink ? containers[p->container].cl : n->cl;
    switch (p->det) {
    case AD_DET_A:
        sb_raw(o, "一");
        sb_raw(o, cl);
        break;
    case AD_DET_THE:
        if (role == ZH_REFERENT) {
            sb_raw(o, "那");
            sb_raw(o, cl);
        }
        break;
    case AD_DET_THE_PL:
        if (role == ZH_REFERENT) sb_raw(o, "那些");
        break;
    case AD_DET_NUMBER:
        ad_synth_number_zh(p->number, num, sizeof num);
        sb_raw(o, num);
        sb_raw(o, cl);
        break;
    case AD_DET_NEG:
    case AD_DET_NEG_PL: break;
    case AD_DET_POSS:
    case AD_DET_POSS_PL: sb_raw(o, possessors[p->possessor].zh); break;
    case AD_DET_HOW_MANY:
        sb_raw(o, "多少");
        sb_raw(o, cl);
        break;
    }
    if (p->colour >= 0) {
        sb_raw(o, colours[p->colour].zh);
        sb_raw(o, "的");
    }
    sb_raw(o, n->zh);
}

static void en_place(sb *o, const ad_synth_spec *s) {
    sb_word(o, preps[s->prep].en);
    en_np(o, &s->place, locations, false);
}

static void de_place(sb *o, const ad_synth_spec *s) {
    const noun_entry *l = &locations[s->place.noun];
    bool contract =
        (s->prep == PR_IN || s->prep == PR_AT) && s->place.det == AD_DET_THE && l->gender != G_F;
    if (contract)
        sb_word(o, s->prep == PR_IN ? "im" : "am");
    else
        sb_word(o, preps[s->prep].de);
    de_np(o, &s->place, locations, DAT, contract);
}

/* "在桌子上" with `zai`, "桌子上" (the topic of 有) without. */
static void zh_place(sb *o, const ad_synth_spec *s, bool zai) {
    if (zai) sb_raw(o, "在");
    zh_np(o, &s->place, locations, ZH_PLACE);
    sb_raw(o, preps[s->prep].zh_loc);
}

static void time_en(int t, char *buf, size_t size) {
    char num[32];
    if (t < T_HALVES) {
        ad_synth_number_en(t - T_HOURS + 1, num, sizeof num);
        snprintf(buf, size, "at %s o'clock", num);
    } else if (t < T_PARTS) {
        ad_synth_number_en(t - T_HALVES + 1, num, sizeof num);
        snprintf(buf, size, "at half past %s", num);
    } else if (t < T_DAYS)
        snprintf(buf, size, "%s", part_en[t - T_PARTS]);
    else if (t < T_TODAY)
        snprintf(buf, size, "on %s", day_en[t - T_DAYS]);
    else
        snprintf(buf, size, "%s", t == T_TODAY ? "today" : "every day");
}

static void time_de(int t, char *buf, size_t size) {
    char num[32];
    if (t < T_HALVES) {
        int h = t - T_HOURS + 1;
        ad_synth_number_de(h, num, sizeof num);
        snprintf(buf, size, "um %s Uhr", h == 1 ? "ein" : num); /* um ein Uhr */
    } else if (t < T_PARTS) {
        int next = (t - T_HALVES + 1) % 12 + 1; /* half past seven = halb acht */
        ad_synth_number_de(next, num, sizeof num);
        snprintf(buf, size, "um halb %s", num);
    } else if (t < T_DAYS)
        snprintf(buf, size, "%s", part_de[t - T_PARTS]);
    else if (t < T_TODAY)
        snprintf(buf, size, "am %s", day_de[t - T_DAYS]);
    else
        snprintf(buf, size, "%s", t == T_TODAY ? "heute" : "jeden Tag");
}

static void time_zh(int t, char *buf, size_t size) {
    char num[32];
    if (t < T_PARTS) {
        int h = t < T_HALVES ? t - T_HOURS + 1 : t - T_HALVES + 1;
        if (h == 1)
            snprintf(num, sizeof num, "一");
        else
            ad_synth_number_zh(h, num, sizeof num);
        snprintf(buf, size, "%s点%s", num, t < T_HALVES ? "" : "半");
    } else if (t < T_DAYS)
        snprintf(buf, size, "%s", part_zh[t - T_PARTS]);
    else if (t < T_TODAY)
        snprintf(buf, size, "%s", day_zh[t - T_DAYS]);
    else
        snprintf(buf, size, "%s", t == T_TODAY ? "今天" : "每天");
}

/* ------------------------------------------------------------------ lookup and validation */

int ad_synth_lookup(ad_synth_table table, const char *en) {
    switch (table) {
    case AD_SYNTH_SUBJECTS:
        for (int i = 0; i < COUNT(subjects); i++)
            if (strcmp(subjects[i].en, en) == 0) return i;
        break;
    case AD_SYNTH_VERBS:
        for (int i = 0; i < COUNT(verbs); i++)
            if (strcmp(verbs[i].en, en) == 0) return i;
        break;
    case AD_SYNTH_NOUNS:
        for (int i = 0; i < COUNT(nouns); i++)
            if (strcmp(nouns[i].en, en) == 0) return i;
        break;
    case AD_SYNTH_LOCATIONS:
        for (int i = 0; i < COUNT(locations); i++)
            if (strcmp(locations[i].en, en) == 0) return i;
        break;
    case AD_SYNTH_PREPS:
        for (int i = 0; i < COUNT(preps); i++)
            if (strcmp(preps[i].en, en) == 0) return i;
        break;
    case AD_SYNTH_COLOURS:
        for (int i = 0; i < COUNT(colours); i++)
            if (strcmp(colours[i].en, en) == 0) return i;
        break;
    case AD_SYNTH_CONTAINERS:
        for (int i = 0; i < COUNT(containers); i++)
            if (strcmp(containers[i].en, en) == 0) return i;
        break;
    case AD_SYNTH_POSSESSORS:
        for (int i = 0; i < COUNT(possessors); i++)
            if (strcmp(possessors[i].en, en) == 0) return i;
        break;
    case AD_SYNTH_TIMES:
        for (int i = 0; i < T_COUNT; i++) {
            char buf[64];
            time_en(i, buf, sizeof buf);
            if (strcmp(buf, en) == 0) return i;
        }
        break;
    }
    return -1;
}

static int check_np(const ad_synth_np *p, const noun_entry *table, int n_table, const char *what,
                    bool place) {
    if (p->noun < 0 || p->noun >= n_table)
        return ad_fail("synth spec: %s noun %d out of range [0, %d)", what, p->noun, n_table);
    if ((int)p->det < 0 || p->det > AD_DET_HOW_MANY)
        return ad_fail("synth spec: %s determiner %d unknown", what, (int)p->det);
    const noun_entry *n = &table[p->noun];
    if (p->colour >= COUNT(colours))
        return ad_fail("synth spec: %s colour %d out of range", what, p->colour);
    if (p->det == AD_DET_NUMBER && (p->number < 2 || p->number > 99))
        return ad_fail("synth spec: %s number %d outside 2..99", what, p->number);
    if ((p->det == AD_DET_POSS || p->det == AD_DET_POSS_PL) &&
        (p->possessor < 0 || p->possessor >= COUNT(possessors) || p->colour >= 0))
        return ad_fail("synth spec: %s possessive needs a possessor and no colour", what);
    if (place && (p->det == AD_DET_NEG || p->det == AD_DET_NEG_PL || p->det == AD_DET_POSS ||
                  p->det == AD_DET_POSS_PL || p->det == AD_DET_HOW_MANY))
        return ad_fail("synth spec: a place takes a, the or a number");
    if (!place && is_drink(n)) {
        if (p->det == AD_DET_NEG) {
            if (p->colour >= 0) return ad_fail("synth spec: %s (a drink) has no colour", what);
        } else if (p->container < 0 || p->container >= COUNT(containers) || p->colour >= 0 ||
                   p->det == AD_DET_THE_PL || p->det == AD_DET_NEG_PL || p->det == AD_DET_POSS ||
                   p->det == AD_DET_POSS_PL)
            return ad_fail("synth spec: %s (a drink) needs a container, no colour, and a, the, a "
                           "number or how many",
                           what);
    }
    return AD_OK;
}

static int check_spec(const ad_synth_spec *s) {
    bool svo = s->kind == AD_SYNTH_SVO, there = s->kind == AD_SYNTH_THERE;
    if ((int)s->kind < 0 || s->kind > AD_SYNTH_COLOUR)
        return ad_fail("synth spec: unknown kind %d", (int)s->kind);
    if ((int)s->mood < 0 || s->mood > AD_MOOD_WHERE)
        return ad_fail("synth spec: unknown mood %d", (int)s->mood);
    if (s->mood == AD_MOOD_HOW_MANY && !svo && !there)
        return ad_fail("synth spec: 'how many' needs an SVO or there-is sentence");
    if (s->mood == AD_MOOD_WHERE && s->kind != AD_SYNTH_LOCATED)
        return ad_fail("synth spec: 'where' needs a located sentence");
    if (svo &&
        (s->subject < 0 || s->subject >= COUNT(subjects) || s->verb < 0 || s->verb >= COUNT(verbs)))
        return ad_fail("synth spec: subject or verb out of range");
    AD_TRY(check_np(&s->object, nouns, COUNT(nouns), "object", false));
    ad_synth_det d = s->object.det;
    if ((s->mood == AD_MOOD_HOW_MANY) != (d == AD_DET_HOW_MANY))
        return ad_fail("synth spec: 'how many' mood and determiner go together");
    if ((s->mood == AD_MOOD_NEGATION && (svo || there)) != (d == AD_DET_NEG || d == AD_DET_NEG_PL))
        return ad_fail("synth spec: negated objects (and only they) take the negative determiners");
    bool referent_subject = s->kind == AD_SYNTH_LOCATED || s->kind == AD_SYNTH_COLOUR;
    if (referent_subject && d != AD_DET_THE && d != AD_DET_THE_PL && d != AD_DET_POSS &&
        d != AD_DET_POSS_PL)
        return ad_fail("synth spec: the subject of is/are takes the, or a possessive");
    if (there && (d == AD_DET_THE || d == AD_DET_THE_PL))
        return ad_fail("synth spec: there-is takes an indefinite object");
    bool needs_place = there || (s->kind == AD_SYNTH_LOCATED && s->mood != AD_MOOD_WHERE);
    bool no_place = s->kind == AD_SYNTH_COLOUR || s->mood == AD_MOOD_WHERE;
    if (needs_place && s->prep < 0) return ad_fail("synth spec: this sentence needs a place");
    if (no_place && s->prep >= 0) return ad_fail("synth spec: this sentence takes no place");
    if (s->prep >= COUNT(preps)) return ad_fail("synth spec: preposition out of range");
    if (s->prep >= 0) {
        AD_TRY(check_np(&s->place, locations, COUNT(locations), "place", true));
        if (!(locations[s->place.noun].preps & B(s->prep)))
            return ad_fail("synth spec: '%s the %s' is not in the grammar", preps[s->prep].en,
                           locations[s->place.noun].en);
    }
    if (s->time >= T_COUNT) return ad_fail("synth spec: time out of range");
    if (s->time >= 0 && (there || s->kind == AD_SYNTH_COLOUR || s->mood == AD_MOOD_WHERE ||
                         (s->kind == AD_SYNTH_LOCATED && s->mood == AD_MOOD_QUESTION)))
        return ad_fail("synth spec: this sentence takes no time phrase");
    if (s->kind == AD_SYNTH_COLOUR &&
        (s->colour < 0 || s->colour >= COUNT(colours) || s->object.colour >= 0))
        return ad_fail("synth spec: a colour sentence needs a predicate colour and a subject "
                       "without one");
    if (svo && (s->mood == AD_MOOD_QUESTION || s->mood == AD_MOOD_HOW_MANY) && s->subject == 0)
        return ad_fail("synth spec: questions do not ask about 'I'");
    return AD_OK;
}

/* ------------------------------------------------------------------ rendering */

static void render_svo(const ad_synth_spec *s, sb *en, sb *de, sb *zh) {
    const subject_entry *subj = &subjects[s->subject];
    const verb_entry *v = &verbs[s->verb];
    bool third = subj->person == P_ER;
    char t_en[64] = "", t_de[64] = "", t_zh[64] = "";
    if (s->time >= 0) {
        time_en(s->time, t_en, sizeof t_en);
        time_de(s->time, t_de, sizeof t_de);
        time_zh(s->time, t_zh, sizeof t_zh);
    }
    const char *v_de = v->de[subj->person];
    switch (s->mood) {
    case AD_MOOD_STATEMENT:
    case AD_MOOD_NEGATION:
        sb_word(en, t_en);
        sb_word(en, subj->en);
        if (s->mood == AD_MOOD_NEGATION) {
            sb_word(en, third ? "does not" : "do not");
            sb_word(en, v->en);
        } else
            sb_word(en, third ? v->en3 : v->en);
        en_np(en, &s->object, nouns, false);
        if (s->prep >= 0) en_place(en, s);
        sb_raw(en, ".");
        if (s->time >= 0) { /* V2: the fronted time pushes the subject after the verb */
            sb_word(de, t_de);
            sb_word(de, v_de);
            sb_word(de, subj->de);
        } else {
            sb_word(de, subj->de);
            sb_word(de, v_de);
        }
        de_np(de, &s->object, nouns, ACC, false);
        if (s->prep >= 0) de_place(de, s);
        sb_raw(de, ".");
        sb_raw(zh, subj->zh);
        sb_raw(zh, t_zh);
        if (s->prep >= 0) zh_place(zh, s, true);
        sb_raw(zh, s->mood == AD_MOOD_NEGATION ? v->zh_neg : v->zh);
        zh_np(zh, &s->object, nouns, ZH_REFERENT);
        sb_raw(zh, "。");
        break;
    case AD_MOOD_QUESTION:
    case AD_MOOD_HOW_MANY:
        if (s->mood == AD_MOOD_HOW_MANY) en_np(en, &s->object, nouns, false);
        sb_word(en, third ? "does" : "do");
        sb_word(en, subj->en);
        sb_word(en, v->en);
        if (s->mood == AD_MOOD_QUESTION) en_np(en, &s->object, nouns, false);
        if (s->prep >= 0) en_place(en, s);
        sb_word(en, t_en);
        sb_raw(en, "?");
        if (s->mood == AD_MOOD_HOW_MANY) de_np(de, &s->object, nouns, ACC, false);
        sb_word(de, v_de);
        sb_word(de, subj->de);
        sb_word(de, t_de);
        if (s->mood == AD_MOOD_QUESTION) de_np(de, &s->object, nouns, ACC, false);
        if (s->prep >= 0) de_place(de, s);
        sb_raw(de, "?");
        sb_raw(zh, subj->zh);
        sb_raw(zh, t_zh);
        if (s->prep >= 0) zh_place(zh, s, true);
        sb_raw(zh, v->zh);
        zh_np(zh, &s->object, nouns, ZH_REFERENT);
        sb_raw(zh, s->mood == AD_MOOD_QUESTION ? "吗？" : "？");
        break;
    default: break;
    }
}

static bool object_plural(const ad_synth_np *p) {
    return det_plural(p->det);
}

static void render_there(const ad_synth_spec *s, sb *en, sb *de, sb *zh) {
    bool pl = object_plural(&s->object);
    switch (s->mood) {
    case AD_MOOD_STATEMENT:
    case AD_MOOD_NEGATION:
        sb_word(en, pl ? "there are" : "there is");
        en_np(en, &s->object, nouns, true);
        en_place(en, s);
        sb_raw(en, ".");
        de_place(de, s);
        sb_word(de, "gibt es");
        de_np(de, &s->object, nouns, ACC, false);
        sb_raw(de, ".");
        zh_place(zh, s, false);
        sb_raw(zh, s->mood == AD_MOOD_NEGATION ? "没有" : "有");
        zh_np(zh, &s->object, nouns, ZH_REFERENT);
        sb_raw(zh, "。");
        break;
    case AD_MOOD_QUESTION:
        sb_word(en, pl ? "are there" : "is there");
        en_np(en, &s->object, nouns, true);
        en_place(en, s);
        sb_raw(en, "?");
        sb_word(de, "gibt es");
        de_np(de, &s->object, nouns, ACC, false);
        de_place(de, s);
        sb_raw(de, "?");
        zh_place(zh, s, false);
        sb_raw(zh, "有");
        zh_np(zh, &s->object, nouns, ZH_REFERENT);
        sb_raw(zh, "吗？");
        break;
    case AD_MOOD_HOW_MANY:
        en_np(en, &s->object, nouns, true);
        sb_word(en, "are there");
        en_place(en, s);
        sb_raw(en, "?");
        de_np(de, &s->object, nouns, ACC, false);
        sb_word(de, "gibt es");
        de_place(de, s);
        sb_raw(de, "?");
        zh_place(zh, s, false);
        sb_raw(zh, "有");
        zh_np(zh, &s->object, nouns, ZH_REFERENT);
        sb_raw(zh, "？");
        break;
    default: break;
    }
}

/* LOCATED and COLOUR: a referent subject with is/are. */
static void render_copula(const ad_synth_spec *s, sb *en, sb *de, sb *zh) {
    bool pl = object_plural(&s->object);
    bool colour = s->kind == AD_SYNTH_COLOUR;
    const char *is_en = pl ? "are" : "is", *is_de = pl ? "sind" : "ist";
    char t_en[64] = "", t_de[64] = "", t_zh[64] = "";
    if (s->time >= 0) {
        time_en(s->time, t_en, sizeof t_en);
        time_de(s->time, t_de, sizeof t_de);
        time_zh(s->time, t_zh, sizeof t_zh);
    }
    switch (s->mood) {
    case AD_MOOD_STATEMENT:
    case AD_MOOD_NEGATION: {
        bool neg = s->mood == AD_MOOD_NEGATION;
        sb_word(en, t_en);
        en_np(en, &s->object, nouns, false);
        sb_word(en, is_en);
        if (neg) sb_word(en, "not");
        if (colour)
            sb_word(en, colours[s->colour].en);
        else
            en_place(en, s);
        sb_raw(en, ".");
        if (s->time >= 0) {
            sb_word(de, t_de);
            sb_word(de, is_de);
            de_np(de, &s->object, nouns, NOM, false);
        } else {
            de_np(de, &s->object, nouns, NOM, false);
            sb_word(de, is_de);
        }
        if (neg) sb_word(de, "nicht");
        if (colour)
            sb_word(de, colours[s->colour].de);
        else
            de_place(de, s);
        sb_raw(de, ".");
        zh_np(zh, &s->object, nouns, ZH_REFERENT);
        sb_raw(zh, t_zh);
        if (colour) {
            sb_raw(zh, neg ? "不是" : "是");
            sb_raw(zh, colours[s->colour].zh);
            sb_raw(zh, "的。");
        } else {
            if (neg) sb_raw(zh, "不");
            zh_place(zh, s, true);
            sb_raw(zh, "。");
        }
        break;
    }
    case AD_MOOD_QUESTION:
        sb_word(en, is_en);
        en_np(en, &s->object, nouns, false);
        if (colour)
            sb_word(en, colours[s->colour].en);
        else
            en_place(en, s);
        sb_raw(en, "?");
        sb_word(de, is_de);
        de_np(de, &s->object, nouns, NOM, false);
        if (colour)
            sb_word(de, colours[s->colour].de);
        else
            de_place(de, s);
        sb_raw(de, "?");
        zh_np(zh, &s->object, nouns, ZH_REFERENT);
        if (colour) {
            sb_raw(zh, "是");
            sb_raw(zh, colours[s->colour].zh);
            sb_raw(zh, "的吗？");
        } else {
            zh_place(zh, s, true);
            sb_raw(zh, "吗？");
        }
        break;
    case AD_MOOD_WHERE:
        sb_word(en, "where");
        sb_word(en, is_en);
        en_np(en, &s->object, nouns, false);
        sb_raw(en, "?");
        sb_word(de, "wo");
        sb_word(de, is_de);
        de_np(de, &s->object, nouns, NOM, false);
        sb_raw(de, "?");
        zh_np(zh, &s->object, nouns, ZH_REFERENT);
        sb_raw(zh, "在哪里？");
        break;
    default: break;
    }
}

int ad_synth_render(const ad_synth_spec *spec, ad_synth_text *out) {
    AD_TRY(check_spec(spec));
    sb en = {out->en, 0, false}, de = {out->de, 0, false}, zh = {out->zh, 0, false};
    out->en[0] = out->de[0] = out->zh[0] = '\0';
    switch (spec->kind) {
    case AD_SYNTH_SVO: render_svo(spec, &en, &de, &zh); break;
    case AD_SYNTH_THERE: render_there(spec, &en, &de, &zh); break;
    case AD_SYNTH_LOCATED:
    case AD_SYNTH_COLOUR: render_copula(spec, &en, &de, &zh); break;
    }
    if (en.overflow || de.overflow || zh.overflow)
        return ad_fail("synth: a sentence exceeds %d bytes", AD_SYNTH_TEXT_MAX);
    capitalize(out->en);
    capitalize(out->de);
    return AD_OK;
}

/* ------------------------------------------------------------------ sampling */

static int pick_weighted(ad_rng *rng, const int *weights, int n) {
    int total = 0;
    for (int i = 0; i < n; i++)
        total += weights[i];
    int r = (int)ad_rng_below(rng, (uint32_t)total);
    for (int i = 0; i < n; i++) {
        if (r < weights[i]) return i;
        r -= weights[i];
    }
    return n - 1;
}

static bool chance(ad_rng *rng, int percent) {
    return (int)ad_rng_below(rng, 100) < percent;
}

static int random_colour(ad_rng *rng, unsigned mask) {
    int options[8], n = 0;
    for (int i = 0; i < COUNT(colours); i++)
        if (mask & (1u << i)) options[n++] = i;
    return n ? options[ad_rng_below(rng, (uint32_t)n)] : -1;
}

/* Mostly small numbers, as people say them, but every number up to 99 occurs. */
static int random_number(ad_rng *rng, int max) {
    if (max <= 12 || chance(rng, 70)) return 2 + (int)ad_rng_below(rng, 11);
    return 13 + (int)ad_rng_below(rng, (uint32_t)(max - 12));
}

static void np_init(ad_synth_np *p) {
    memset(p, 0, sizeof *p);
    p->colour = p->container = p->possessor = -1;
}

/* Fills colour, number, container and possessor for a chosen noun and determiner. */
static void np_fill(ad_rng *rng, ad_synth_np *p, const noun_entry *n, int colour_percent) {
    if (is_drink(n)) {
        if (p->det != AD_DET_NEG) p->container = (int)ad_rng_below(rng, COUNT(containers));
    } else if (p->det != AD_DET_POSS && p->det != AD_DET_POSS_PL && n->colours &&
               chance(rng, colour_percent))
        p->colour = random_colour(rng, n->colours);
    if (p->det == AD_DET_NUMBER) p->number = random_number(rng, 99);
    if (p->det == AD_DET_POSS || p->det == AD_DET_POSS_PL)
        p->possessor = (int)ad_rng_below(rng, COUNT(possessors));
}

static bool fits(int size, const noun_entry *loc, int prep) {
    if (prep == PR_NEXT || prep == PR_FRONT || prep == PR_BEHIND)
        return size <= (loc->size >= 2 ? 2 : 1);
    return size <= loc->hold;
}

/* A place for an object of `size` (or any size when < 0). `setting`: somewhere one buys or reads
 * things, with its own preposition. `definite_only`: the topic of a there-is sentence. Returns
 * false when no attempt found a fitting place. */
static bool sample_place(ad_rng *rng, ad_synth_spec *s, int size, bool setting, bool definite_only,
                         const char *object_en) {
    for (int attempt = 0; attempt < 32; attempt++) {
        int li = (int)ad_rng_below(rng, COUNT(locations));
        const noun_entry *l = &locations[li];
        int prep;
        if (setting) {
            if (l->setting_prep < 0) continue;
            prep = l->setting_prep;
        } else {
            int options[8], n = 0;
            for (int p = 0; p < COUNT(preps); p++)
                if (l->preps & B(p)) options[n++] = p;
            prep = options[ad_rng_below(rng, (uint32_t)n)];
        }
        if (size >= 0 && !fits(size, l, prep)) continue;
        if (object_en && strcmp(object_en, l->en) == 0) continue; /* a table on the table */
        np_init(&s->place);
        s->place.noun = li;
        s->prep = prep;
        bool spot = prep == PR_UNDER || prep == PR_NEXT || prep == PR_FRONT || prep == PR_BEHIND;
        static const int w_plural[] = {65, 20, 8, 7}; /* the, a, number, the (plural) */
        static const int w_single[] = {80, 20};
        int choice = definite_only            ? 0
                     : (spot && l->plural_ok) ? pick_weighted(rng, w_plural, 4)
                                              : pick_weighted(rng, w_single, 2);
        static const ad_synth_det dets[] = {AD_DET_THE, AD_DET_A, AD_DET_NUMBER, AD_DET_THE_PL};
        s->place.det = dets[choice];
        if (s->place.det == AD_DET_NUMBER) s->place.number = random_number(rng, 12);
        if (l->colours && chance(rng, 25)) s->place.colour = random_colour(rng, l->colours);
        return true;
    }
    s->prep = -1;
    return false;
}

static int random_noun(ad_rng *rng, unsigned cats, unsigned colour_required) {
    for (;;) {
        int i = (int)ad_rng_below(rng, COUNT(nouns));
        if ((nouns[i].cat & cats) && (!colour_required || nouns[i].colours)) return i;
    }
}

static void sample_svo(ad_rng *rng, ad_synth_spec *s) {
    static const int w_mood[] = {50, 20, 20, 10};
    s->mood = (ad_synth_mood)pick_weighted(rng, w_mood, 4);
    bool asks = s->mood == AD_MOOD_QUESTION || s->mood == AD_MOOD_HOW_MANY;
    s->subject = asks ? 1 + (int)ad_rng_below(rng, COUNT(subjects) - 1)
                      : (int)ad_rng_below(rng, COUNT(subjects));
    s->verb = (int)ad_rng_below(rng, COUNT(verbs));
    const verb_entry *v = &verbs[s->verb];
    s->object.noun = random_noun(rng, v->cats, 0);
    const noun_entry *n = &nouns[s->object.noun];
    static const ad_synth_det affirm[] = {AD_DET_A, AD_DET_NUMBER, AD_DET_THE, AD_DET_THE_PL};
    static const int w_affirm[] = {35, 35, 20, 10};
    switch (s->mood) {
    case AD_MOOD_STATEMENT:
    case AD_MOOD_QUESTION:
        s->object.det = affirm[pick_weighted(rng, w_affirm, is_drink(n) ? 3 : 4)];
        break;
    case AD_MOOD_NEGATION:
        s->object.det = is_drink(n) || chance(rng, 50) ? AD_DET_NEG : AD_DET_NEG_PL;
        break;
    default: s->object.det = AD_DET_HOW_MANY; break;
    }
    np_fill(rng, &s->object, n, 50);
    if (v->place == PLACE_ANY && chance(rng, 60))
        sample_place(rng, s, n->size, false, false, n->en);
    else if (v->place == PLACE_SETTING && chance(rng, 40))
        sample_place(rng, s, n->size, true, false, n->en);
    if (chance(rng, 35)) s->time = (int)ad_rng_below(rng, T_COUNT);
}

static void sample_there(ad_rng *rng, ad_synth_spec *s) {
    static const int w_mood[] = {50, 20, 20, 10};
    s->mood = (ad_synth_mood)pick_weighted(rng, w_mood, 4);
    s->object.noun = random_noun(rng, C_ALL, 0);
    const noun_entry *n = &nouns[s->object.noun];
    switch (s->mood) {
    case AD_MOOD_STATEMENT:
    case AD_MOOD_QUESTION: s->object.det = chance(rng, 50) ? AD_DET_A : AD_DET_NUMBER; break;
    case AD_MOOD_NEGATION:
        s->object.det = is_drink(n) || chance(rng, 50) ? AD_DET_NEG : AD_DET_NEG_PL;
        break;
    default: s->object.det = AD_DET_HOW_MANY; break;
    }
    np_fill(rng, &s->object, n, 50);
    sample_place(rng, s, n->size, false, true, n->en);
}

static void sample_copula(ad_rng *rng, ad_synth_spec *s, bool colour) {
    if (colour) {
        static const int w_mood[] = {50, 25, 25};
        s->mood = (ad_synth_mood)pick_weighted(rng, w_mood, 3);
    } else {
        static const int w_mood[] = {45, 20, 20, 0, 15};
        s->mood = (ad_synth_mood)pick_weighted(rng, w_mood, 5);
    }
    s->object.noun = random_noun(rng, C_ALL, colour);
    const noun_entry *n = &nouns[s->object.noun];
    static const ad_synth_det dets[] = {AD_DET_THE, AD_DET_THE_PL, AD_DET_POSS, AD_DET_POSS_PL};
    static const int w_det[] = {40, 20, 25, 15};
    s->object.det = is_drink(n) ? AD_DET_THE : dets[pick_weighted(rng, w_det, 4)];
    np_fill(rng, &s->object, n, colour ? 0 : 40);
    if (colour) {
        s->colour = random_colour(rng, n->colours);
        return;
    }
    if (s->mood != AD_MOOD_WHERE) sample_place(rng, s, n->size, false, false, n->en);
    if ((s->mood == AD_MOOD_STATEMENT || s->mood == AD_MOOD_NEGATION) && chance(rng, 25))
        s->time = (int)ad_rng_below(rng, T_COUNT);
}

void ad_synth_sample(ad_rng *rng, ad_synth_spec *s) {
    for (;;) {
        memset(s, 0, sizeof *s);
        np_init(&s->object);
        np_init(&s->place);
        s->prep = s->time = s->colour = -1;
        static const int w_kind[] = {45, 20, 20, 15};
        s->kind = (ad_synth_kind)pick_weighted(rng, w_kind, 4);
        switch (s->kind) {
        case AD_SYNTH_SVO: sample_svo(rng, s); break;
        case AD_SYNTH_THERE: sample_there(rng, s); break;
        case AD_SYNTH_LOCATED: sample_copula(rng, s, false); break;
        case AD_SYNTH_COLOUR: sample_copula(rng, s, true); break;
        }
        bool needs_place =
            s->kind == AD_SYNTH_THERE || (s->kind == AD_SYNTH_LOCATED && s->mood != AD_MOOD_WHERE);
        if (!needs_place || s->prep >= 0) return; /* else: nothing fitted; draw again */
    }
}

/* ------------------------------------------------------------------ distinct splits */

const char *const ad_synth_split_names[AD_SYNTH_SPLITS] = {"train", "dev", "eval"};

typedef struct {
    uint64_t *hashes; /* 0 = empty slot */
    char **keys;
    size_t cap;
} string_set;

static uint64_t fnv1a(const char *s) {
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211ULL;
    return h ? h : 1;
}

/* Inserts `key` (borrowed; must outlive the set); returns false when already present. */
static bool set_insert(string_set *set, char *key) {
    uint64_t h = fnv1a(key);
    size_t i = (size_t)h & (set->cap - 1);
    while (set->hashes[i]) {
        if (set->hashes[i] == h && strcmp(set->keys[i], key) == 0) return false;
        i = (i + 1) & (set->cap - 1);
    }
    set->hashes[i] = h;
    set->keys[i] = key;
    return true;
}

/* The split a sentence may belong to, from its English text alone (1 in 10 eval, 1 in 20
 * dev, the rest train), whatever the seed: corpora generated with different seeds or sizes
 * never share a sentence between one's train split and another's dev or eval split (a teacher
 * trained on one corpus is scored on another's eval split in the demo). */
static int sentence_split(const char *en) {
    uint64_t z = fnv1a(en);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    unsigned bucket = (unsigned)(z % 20);
    return bucket < 2 ? AD_SYNTH_EVAL : bucket < 3 ? AD_SYNTH_DEV : AD_SYNTH_TRAIN;
}

/* Streams of the split generators (eval is drawn first; see the header). */
static const uint64_t split_stream[AD_SYNTH_SPLITS] = {0x5e17a1, 0x5e17a2, 0x5e17a3};

int ad_synth_make_splits(uint64_t seed, const int counts[AD_SYNTH_SPLITS],
                         ad_synth_text *out[AD_SYNTH_SPLITS]) {
    size_t total = 0;
    for (int s = 0; s < AD_SYNTH_SPLITS; s++) {
        out[s] = NULL;
        if (counts[s] < 0) return ad_fail("synth: negative sentence count %d", counts[s]);
        total += (size_t)counts[s];
    }
    string_set set = {0};
    set.cap = 16;
    while (set.cap < 2 * total + 16)
        set.cap *= 2;
    set.hashes = ad_calloc(set.cap, sizeof *set.hashes, "sentence set");
    set.keys = ad_calloc(set.cap, sizeof *set.keys, "sentence set");
    int rc = AD_OK;
    if (!set.hashes || !set.keys) {
        rc = AD_ERR;
        goto done;
    }
    static const int order[AD_SYNTH_SPLITS] = {AD_SYNTH_EVAL, AD_SYNTH_DEV, AD_SYNTH_TRAIN};
    for (int k = 0; k < AD_SYNTH_SPLITS && rc == AD_OK; k++) {
        int s = order[k], n = counts[s];
        out[s] = ad_calloc((size_t)n + 1, sizeof(ad_synth_text), "synthetic sentences");
        if (!out[s]) {
            rc = AD_ERR;
            break;
        }
        ad_rng rng;
        ad_rng_init(&rng, seed, split_stream[s]);
        int64_t attempts = 0, max_attempts = 2000 * (int64_t)n + 100000;
        for (int i = 0; i < n;) {
            if (attempts++ >= max_attempts) {
                rc = ad_fail("synth: only %d distinct %s sentences after %lld draws (%d wanted); "
                             "the grammar is too small for this many",
                             i, ad_synth_split_names[s], (long long)attempts, n);
                break;
            }
            ad_synth_spec spec;
            ad_synth_sample(&rng, &spec);
            if (ad_synth_render(&spec, &out[s][i]) < 0) {
                rc = ad_fail_context("synth: the sampler drew an invalid sentence");
                break;
            }
            if (sentence_split(out[s][i].en) == s && set_insert(&set, out[s][i].en)) i++;
        }
    }
done:
    free(set.hashes);
    free(set.keys);
    if (rc < 0)
        for (int s = 0; s < AD_SYNTH_SPLITS; s++) {
            free(out[s]);
            out[s] = NULL;
        }
    return rc;
}
