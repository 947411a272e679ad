"""Flat datasets unlike tiktok_claims, each with its spec, to run surfacer and the bench on.

    uv run python bench/flat_worlds.py --out /tmp/flat_worlds [--seed 0]
    uv run python bench/quality.py --no-tiktok --no-sim --spec /tmp/flat_worlds/sms_spam.toml

Writes four CSV files and their TOML specs into `--out` (never into the repository):

- `sms_spam`: short texts like the UCI SMS Spam Collection: 5,572 rows, ~13% spam, only the
  columns `v1` ("ham"/"spam") and `v2` (the message), no id column. Spam carries URLs,
  prizes, phone numbers and capitals in varied wording; some spam is written casually, some
  ham looks like spam (offers, numbers, "free"), and ~2% of labels are flipped.
- `youtube_spam`: comments like the YouTube Spam Collection: COMMENT_ID, AUTHOR, DATE
  (ISO 8601 without zone, a few blank), CONTENT, CLASS 0/1, ~50% spam, 2,000 rows. The spam
  wording drifts over time (campaigns), so a time split is harder than a random one.
- `tabular_rare`: numbers only, 10,000 rows, ~2% positives, a nonlinear signal
  (interactions, a ring, a periodic term) under heavy-tailed columns and noise columns.
- `multilingual`: texts in several languages and scripts with emoji, a few very long ones
  (up to ~40k characters) and some blank ones; the label depends partly on words in the
  text and partly on a categorical `region`.

Standard library, numpy and pandas only; the same seed writes the same bytes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

# --------------------------------------------------------------------------- sms spam

HAM_OPENERS = [
    "ok", "hey", "hi", "lol", "yeah", "sorry", "haha", "oh", "hmm", "k", "babe", "dude",
    "morning", "night", "aight", "u there?", "wat", "yo",
]  # fmt: skip
HAM_BODIES = [
    "i'll be home by {h}", "can you pick up some milk on the way", "did you see the game last night",
    "where are you now", "gonna be late, bus is stuck", "i'm at the library till {h}",
    "what time is dinner", "call me when you get this", "miss you already",
    "just woke up lol", "are we still on for tomorrow", "mum says hi",
    "send me the notes from class pls", "i left my keys at yours", "how was the interview",
    "dont forget the party on sat", "my phone is dying", "that film was so boring",
    "let me know if u need anything", "im so tired today", "see you at {h} then",
    "can't talk now, in a meeting", "did u eat", "the train is delayed again",
    "thanks for yesterday, had fun", "where did you park", "happy birthday!! have a great one",
    "i'll text you the address", "bring a jacket its cold", "wanna grab lunch",
]  # fmt: skip
HAM_CLOSERS = ["", "", "", " :)", " xx", " ;-)", " lol", " ok?", " !", " .", " haha", " <3"]
# ham that looks like spam: numbers, offers, "free", "win"
HAM_SPAMMY = [
    "I won the quiz at the pub!! we got a free round of drinks",
    "call me on {phone} when ur free tonight",
    "the shop has 50% off everything this week, wanna go?",
    "my number changed, new one is {phone}",
    "FREE tonight? movie at {h}",
    "did you get the prize draw email from work? i think its real lol",
    "text me the code for the wifi, its on the router",
    "lottery ticket didnt win again haha",
    "URGENT: need the car back by {h} pls",
    "they offered me the job!!! start monday",
]  # fmt: skip

SPAM_HOOKS = [
    "WINNER!!", "Congratulations!", "URGENT!", "FREE entry", "You have been selected",
    "Final notice:", "SIX chances to win CASH!", "Important information for", "Dear customer,",
    "Txt STOP to end.", "Hot singles in your area!", "Claim now!", "As a valued network customer",
]  # fmt: skip
SPAM_OFFERS = [
    "you have won a {cur}{amt} prize", "a guaranteed {cur}{amt} cash award is waiting",
    "your mobile number has won {amt} bonus points", "you are awarded a FREE holiday",
    "win a brand new phone", "2 nights at a 5* hotel are yours",
    "get {amt} free texts and unlimited calls", "a {cur}{amt} gift voucher is reserved for you",
    "your account has unclaimed rewards", "ringtone of the week FREE",
    "camera phone upgrade for FREE", "you could be our weekly {cur}{amt} winner",
]  # fmt: skip
SPAM_CALLS = [
    "To claim call {prem} now", "Reply WIN to {short}", "Text CLAIM to {short}",
    "Visit {url} to claim", "call {prem} from a landline", "claim code {code}",
    "T&Cs apply {url}", "Call {prem}. Valid {h2} hrs only", "reply YES to {short}",
    "go to {url}", "ur code is {code}, call {prem}", "Std txt rate. {cur}1.50/msg",
]  # fmt: skip
# spam written like a friend's text (the hard ones)
SPAM_CASUAL = [
    "hey its {name}, been trying to reach u, call me on {prem} x",
    "hi there, u have a voicemail waiting, dial {prem} to listen",
    "sorry i missed your call, can u ring me back on {prem}",
    "{name} here, saw ur profile, wanna chat? txt me on {short}",
    "hey babe, i'm new in town, reply to {short} for my pics",
    "ur friend {name} has sent u a message, call {prem} to hear it",
]  # fmt: skip
NAMES = ["Jess", "Tom", "Kate", "Sam", "Mia", "Jo", "Amy", "Dan", "Lucy", "Ben", "Ria"]
DOMAINS = ["winz", "clm4u", "txtclub", "prizeuk", "freemsg", "bonusnet", "getitnow", "mobi"]


def _phone(rng: np.random.Generator) -> str:
    return "07" + "".join(str(d) for d in rng.integers(0, 10, 9))


def _premium(rng: np.random.Generator) -> str:
    return "09" + "".join(str(d) for d in rng.integers(0, 10, 9))


def _fill(template: str, rng: np.random.Generator) -> str:
    domain = DOMAINS[rng.integers(len(DOMAINS))]
    return template.format(
        h=f"{rng.integers(1, 12)}{'' if rng.random() < 0.5 else ':30'}",
        h2=int(rng.choice([12, 24, 48])),
        phone=_phone(rng),
        prem=_premium(rng),
        short=str(rng.integers(10000, 99999)),
        code="".join(rng.choice(list("ABCDEFGHJKLMNPQRSTUVWXYZ23456789"), 5)),
        cur=str(rng.choice(["£", "$", "", "EUR "])),
        amt=int(rng.choice([100, 250, 500, 900, 1000, 2000, 5000])),
        url=str(
            rng.choice(
                [
                    f"www.{domain}.co.uk",
                    f"http://{domain}.com/c",
                    f"{domain}.net",
                    f"bit.ly/{domain}",
                ]
            )
        ),
        name=NAMES[rng.integers(len(NAMES))],
    )


def _ham(rng: np.random.Generator) -> str:
    if rng.random() < 0.06:
        return _fill(HAM_SPAMMY[rng.integers(len(HAM_SPAMMY))], rng)
    parts = []
    if rng.random() < 0.5:
        parts.append(HAM_OPENERS[rng.integers(len(HAM_OPENERS))])
    for _ in range(int(rng.integers(1, 3))):
        parts.append(_fill(HAM_BODIES[rng.integers(len(HAM_BODIES))], rng))
    text = ", ".join(parts) + HAM_CLOSERS[rng.integers(len(HAM_CLOSERS))]
    if rng.random() < 0.1:
        text = text.capitalize()
    return text


def _spam(rng: np.random.Generator) -> str:
    if rng.random() < 0.18:
        return _fill(SPAM_CASUAL[rng.integers(len(SPAM_CASUAL))], rng)
    parts = []
    if rng.random() < 0.8:
        parts.append(SPAM_HOOKS[rng.integers(len(SPAM_HOOKS))])
    parts.append(_fill(SPAM_OFFERS[rng.integers(len(SPAM_OFFERS))], rng))
    for _ in range(int(rng.integers(1, 3))):
        parts.append(_fill(SPAM_CALLS[rng.integers(len(SPAM_CALLS))], rng))
    text = ". ".join(parts)
    roll = rng.random()
    if roll < 0.3:
        text = text.upper()
    elif roll < 0.45:
        text = text.lower()
    return text


def sms_spam(rng: np.random.Generator, rows: int = 5572) -> tuple[pd.DataFrame, str]:
    spam = rng.random(rows) < 0.118  # with the 2% flips below: ~13.4% labelled spam
    texts = [_spam(rng) if s else _ham(rng) for s in spam]
    noisy = rng.random(rows) < 0.02
    label = np.where(spam ^ noisy, "spam", "ham")
    frame = pd.DataFrame({"v1": label, "v2": texts})
    spec = """name = "sms_spam"
description = "Short messages labelled ham/spam (like the UCI SMS Spam Collection)."
path = "sms_spam.csv"
text = ["v2"]

[labels.spam]
column = "v1"
equals = "spam"
"""
    return frame, spec


# --------------------------------------------------------------------------- youtube spam

YT_HAM = [
    "this song never gets old", "who is still listening in {year}?", "love this song so much",
    "the video is so funny haha", "her voice is amazing", "this brings back memories",
    "best song ever", "I can't stop watching this", "the dance at 2:{sec} is epic",
    "{views} views and counting", "this is my childhood", "such a masterpiece",
    "came here after the news, still great", "the beat drops at 1:{sec}", "omg the lyrics",
    "i played this at my wedding", "better than the original", "why so many dislikes?",
    "watching this at 3am", "this deserves more views",
]  # fmt: skip
YT_SPAM = {
    0: [
        "Check out my channel please! {url}", "subscribe to me and i'll subscribe back",
        "please like this comment so everyone sees my music", "visit {url} for free gift cards",
        "hey guys check out my new video {url}", "I'm a small youtuber, please subscribe!!",
        "make money online from home {url}", "follow me on twitter {at}",
    ],
    1: [
        "get free followers instantly at {url}", "who wants free robux? {url}",
        "my sister makes $80/hr on her laptop, see {url}", "check my playlist, you will love it",
        "sub4sub anyone? reply done", "watch my cover of this song, link in my profile",
        "join my giveaway, 1000 winners {url}", "instagram {at} follow for follow",
    ],
    2: [
        "i just uploaded a reaction to this, would mean a lot if u watched",
        "anyone want to collab? my channel has 200 subs", "earn gift cards by playing games: {url}",
        "dm me on instagram {at} for a shoutout", "im giving away headphones on my channel",
        "free iphone for the first 100 {url}", "please check out my music, link above",
    ],
}  # fmt: skip
YT_HAM_TAILS = [
    " (subscribed!)", " found it via {url}", " check 1:{sec}", " my channel is all covers of her",
    " link to the full version? ", " watch the live version too", " follow her on instagram",
]  # fmt: skip
YT_SPAM_QUIET = [
    "hey", "nice", "first!", "I like it", "who else is bored", "good job man", "lol",
    "this is awesome", "hello everyone", "amazing video",
]  # fmt: skip
YT_AUTHORS_HAM = [
    "Maria G", "john smith", "xXGamerXx", "Lena K", "Ahmed", "Sofia R", "Chris P", "Nina",
    "Paul B", "Yuki T", "Rafael", "Emma W", "Lucas", "Ana Paula", "Kevin", "Olga",
]  # fmt: skip
YT_AUTHORS_SPAM = ["M.E.S", "Jessica Smith", "DanceMusicTV", "FreeGiftz", "Promo Hub", "Mike Rap"]


def youtube_spam(rng: np.random.Generator, rows: int = 2000) -> tuple[pd.DataFrame, str]:
    start = pd.Timestamp("2013-07-01")
    span = (pd.Timestamp("2015-06-30") - start).total_seconds()
    secs = np.sort(rng.random(rows) * span)
    phase = np.minimum((secs / span * 3).astype(int), 2)  # three spam campaigns over time
    # the spam share rises and falls over the period (around 50% overall)
    share = 0.5 + 0.15 * np.sin(secs / span * 2 * np.pi)
    spam = rng.random(rows) < share
    contents, authors = [], []
    for s, ph in zip(spam, phase, strict=True):
        if s:
            # mostly the current campaign's wording, sometimes an earlier one's
            pool = YT_SPAM[int(ph) if rng.random() < 0.8 else int(rng.integers(0, 3))]
            text = pool[rng.integers(len(pool))]
            if rng.random() < 0.2:  # praise first, the plug after: reads like a fan
                text = f"{YT_HAM[rng.integers(len(YT_HAM))]} {text}"
            elif rng.random() < 0.08:  # a plug without any link or channel word
                text = str(rng.choice(YT_SPAM_QUIET))
            author = (
                YT_AUTHORS_SPAM[rng.integers(len(YT_AUTHORS_SPAM))]
                if rng.random() < 0.3
                else f"user{rng.integers(10_000, 99_999)}"
            )
        else:
            text = YT_HAM[rng.integers(len(YT_HAM))]
            if rng.random() < 0.12:  # ham that mentions links, channels or subscribing
                text += str(rng.choice(YT_HAM_TAILS))
            author = (
                YT_AUTHORS_HAM[rng.integers(len(YT_AUTHORS_HAM))]
                if rng.random() < 0.4
                else f"user{rng.integers(10_000, 99_999)}"
            )
        text = text.format(
            url=str(rng.choice(["http://bit.ly/1a2b", "https://goo.gl/xyz", "www.freegift.us"])),
            at=f"@{rng.choice(['beatz', 'lilmo', 'promo_k'])}",
            year=int(rng.choice([2014, 2015])),
            sec=f"{rng.integers(0, 60):02d}",
            views=f"{rng.integers(1, 3)},{rng.integers(100, 999)},000,000",
        )
        if rng.random() < 0.1:
            text = "\ufeff" + text  # the real files carry a byte-order mark in some comments
        contents.append(text)
        authors.append(author)
    flip = rng.random(rows) < 0.03
    dates = (start + pd.to_timedelta(secs, unit="s")).strftime("%Y-%m-%dT%H:%M:%S").to_numpy()
    dates = dates.astype(object)
    dates[rng.random(rows) < 0.01] = ""  # some comments carry no date
    ids = [
        f"z{''.join(rng.choice(list('abcdefghijklmnopqrstuvwxyz0123456789'), 22))}"
        for _ in range(rows)
    ]
    frame = pd.DataFrame(
        {
            "COMMENT_ID": ids,
            "AUTHOR": authors,
            "DATE": dates,
            "CONTENT": contents,
            "CLASS": (spam ^ flip).astype(int),
        }
    )
    spec = """name = "youtube_spam"
description = "Video comments labelled spam 0/1 (like the YouTube Spam Collection)."
path = "youtube_spam.csv"
id = "COMMENT_ID"
time = "DATE"
timezone = "UTC"
text = ["CONTENT"]
categorical = ["AUTHOR"]

[labels.spam]
column = "CLASS"
equals = 1
"""
    return frame, spec


# --------------------------------------------------------------------------- tabular, rare


def tabular_rare(rng: np.random.Generator, rows: int = 10_000) -> tuple[pd.DataFrame, str]:
    age = rng.lognormal(5, 1.2, rows)  # account age, days
    posts = rng.negative_binomial(2, 0.05, rows).astype(float)
    followers = rng.lognormal(4, 2, rows)
    following = rng.lognormal(4.5, 1.5, rows)
    ratio = np.log1p(followers) - np.log1p(following)
    hour = rng.integers(0, 24, rows).astype(float)
    session = rng.gamma(2, 8, rows)
    x1, x2 = rng.normal(size=rows), rng.normal(size=rows)
    noise = rng.normal(size=(rows, 4))
    signal = (
        1.6 * ((x1 * x2) > 0.8)  # an interaction
        + 1.4 * ((x1**2 + x2**2) > 6)  # a ring
        + 1.0 * np.cos(hour / 24 * 2 * np.pi)  # night-time activity
        + 1.2 * ((age < 30) & (posts > 60))  # new accounts posting a lot
        - 0.8 * np.tanh(ratio)
        + 0.6 * np.log1p(session) / 3
    )
    # the intercept is set for ~2% positives (generator only; no model sees it)
    lo, hi = -20.0, 5.0
    for _ in range(60):
        mid = (lo + hi) / 2
        rate = np.mean(1 / (1 + np.exp(-(mid + signal))))
        lo, hi = (mid, hi) if rate < 0.02 else (lo, mid)
    label = rng.random(rows) < 1 / (1 + np.exp(-(lo + signal)))
    frame = pd.DataFrame(
        {
            "account_id": np.arange(100_000, 100_000 + rows),
            "account_age_days": np.round(age, 1),
            "posts_30d": posts,
            "followers": np.round(followers),
            "following": np.round(following),
            "active_hour": hour,
            "session_min": np.round(session, 2),
            "score_a": np.round(x1, 4),
            "score_b": np.round(x2, 4),
            **{f"aux_{i}": np.round(noise[:, i], 4) for i in range(4)},
            "fraud": label.astype(int),
        }
    )
    missing = rng.random(rows) < 0.005
    frame["session_min"] = frame["session_min"].astype(object)
    frame.loc[missing, "session_min"] = ""
    spec = """name = "tabular_rare"
description = "Accounts with numeric activity features; rare fraud label."
path = "tabular_rare.csv"
id = "account_id"
numeric = ["account_age_days", "posts_30d", "followers", "following", "active_hour",
           "session_min", "score_a", "score_b", "aux_0", "aux_1", "aux_2", "aux_3"]

[labels.fraud]
column = "fraud"
equals = 1
"""
    return frame, spec


# --------------------------------------------------------------------------- multilingual

ML_TEXT = {
    "en": "the video was great thanks for sharing my friend love this place today",
    "es": "el video es muy bueno gracias por compartir me encanta este lugar hoy",
    "de": "das Video ist sehr gut danke fürs Teilen ich liebe diesen Ort heute",
    "ja": "この 動画 は とても 良い です 共有 ありがとう この 場所 が 大好き",
    "ar": "الفيديو رائع شكرا على المشاركة أحب هذا المكان اليوم",
    "ru": "видео очень хорошее спасибо что поделились люблю это место сегодня",
    "hi": "वीडियो बहुत अच्छा है साझा करने के लिए धन्यवाद",
}
ML_WORDS = {lang: text.split() for lang, text in ML_TEXT.items()}
ML_BAD = {
    "en": ["scam", "crypto", "giveaway", "dm", "investment"],
    "es": ["estafa", "cripto", "sorteo", "inversión", "ganancias"],
    "de": ["Betrug", "Krypto", "Gewinnspiel", "Rendite", "Anlage"],
    "ja": ["詐欺", "仮想通貨", "プレゼント", "投資", "儲かる"],
    "ar": ["احتيال", "عملة", "استثمار", "أرباح", "هدية"],
    "ru": ["мошенничество", "крипта", "розыгрыш", "инвестиции", "доход"],
    "hi": ["धोखा", "क्रिप्टो", "निवेश", "इनाम", "मुफ्त"],
}
EMOJI = ["😀", "🔥", "💰", "❤️", "👍", "🙏", "😂", "🚀", "🎁", "✨", "🇧🇷", "👩‍💻"]
REGIONS = ["BR", "MX", "DE", "JP", "EG", "RU", "IN", "US", "FR", "NG", "ID", "TR"]


def multilingual(rng: np.random.Generator, rows: int = 6000) -> tuple[pd.DataFrame, str]:
    region = rng.choice(REGIONS, rows, p=np.r_[np.full(8, 0.1), np.full(4, 0.05)])
    region_effect = dict(zip(REGIONS, rng.normal(0, 1.0, len(REGIONS)), strict=True))
    region_effect["NG"], region_effect["ID"] = 1.6, 1.2  # two regions with more abuse
    langs = list(ML_WORDS)
    texts, bad_counts = [], np.zeros(rows)
    for i in range(rows):
        lang = langs[rng.integers(len(langs))]
        n = int(rng.integers(3, 40))
        words = list(rng.choice(ML_WORDS[lang], n))
        n_bad = int(rng.poisson(0.25))
        for _ in range(n_bad):  # a bad word, sometimes from another language
            other = lang if rng.random() < 0.7 else langs[rng.integers(len(langs))]
            words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(ML_BAD[other])))
        bad_counts[i] = n_bad
        for _ in range(int(rng.poisson(1.5))):
            words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(EMOJI)))
        text = " ".join(words)
        roll = rng.random()
        if roll < 0.03:  # very long: a pasted wall of text
            text = (text + " ") * int(rng.integers(50, 400))
        elif roll < 0.08:
            text = "".join(rng.choice(EMOJI, int(rng.integers(1, 12))))  # emoji only
        elif roll < 0.13:
            text = str(rng.choice(["", " ", "\t"]))  # blank
        texts.append(text)
    logit = -3.4 + np.array([region_effect[r] for r in region]) + 1.6 * np.minimum(bad_counts, 2)
    logit += rng.normal(0, 0.7, rows)
    label = rng.random(rows) < 1 / (1 + np.exp(-logit))
    frame = pd.DataFrame(
        {
            "post_id": [f"p{i:06d}" for i in range(rows)],
            "region": region,
            "text": texts,
            "is_violation": np.where(label, "yes", "no"),
        }
    )
    spec = """name = "multilingual"
description = "Posts in many languages with emoji, long and blank texts; label from text and region."
path = "multilingual.csv"
id = "post_id"
text = ["text"]
categorical = ["region"]

[labels.violation]
column = "is_violation"
equals = "yes"
"""
    return frame, spec


WORLDS = {
    "sms_spam": sms_spam,
    "youtube_spam": youtube_spam,
    "tabular_rare": tabular_rare,
    "multilingual": multilingual,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the CSVs and specs")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same bytes)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for i, (name, make) in enumerate(WORLDS.items()):
        frame, spec = make(np.random.default_rng([args.seed, i]))
        frame.to_csv(args.out / f"{name}.csv", index=False)
        (args.out / f"{name}.toml").write_text(spec, encoding="utf-8")
        label = frame.columns[-1] if name != "sms_spam" else "v1"
        print(f"{name}: {len(frame):,} rows, labels {frame[label].value_counts().to_dict()}")
    print(f"wrote {len(WORLDS)} datasets and specs to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
