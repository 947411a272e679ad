"""Vocabularies of the simulated ecosystem: regions, categories, hashtags, caption and comment banks.

Fixed, module-level data so the shapes are easy to read and identical for every run; the
simulator only samples from these banks (vectorized), it never builds text per event.
"""

from __future__ import annotations

from dataclasses import dataclass

# Region -> (share of creators, UTC offset in hours, languages, language weights).
REGIONS: dict[str, tuple[float, float, tuple[str, ...], tuple[float, ...]]] = {
    "US": (0.22, -5.0, ("en", "es"), (0.85, 0.15)),
    "BR": (0.14, -3.0, ("pt",), (1.0,)),
    "IN": (0.18, 5.5, ("hi", "en"), (0.55, 0.45)),
    "ID": (0.12, 7.0, ("id",), (1.0,)),
    "MX": (0.09, -6.0, ("es",), (1.0,)),
    "GB": (0.08, 0.0, ("en",), (1.0,)),
    "DE": (0.07, 1.0, ("de", "en"), (0.9, 0.1)),
    "JP": (0.10, 9.0, ("ja",), (1.0,)),
}
REGION_NAMES: tuple[str, ...] = tuple(REGIONS)
LANGUAGES: tuple[str, ...] = tuple(sorted({lang for r in REGIONS.values() for lang in r[2]}))

# Category -> (share of creators, log-odds shift of harmful interactions, P(video, photo, live)).
CATEGORIES: dict[str, tuple[float, float, tuple[float, float, float]]] = {
    "gaming": (0.14, 0.6, (0.70, 0.08, 0.22)),
    "beauty": (0.11, 0.2, (0.65, 0.32, 0.03)),
    "comedy": (0.14, 0.1, (0.88, 0.10, 0.02)),
    "food": (0.10, -0.6, (0.70, 0.28, 0.02)),
    "sports": (0.10, 0.5, (0.80, 0.12, 0.08)),
    "news": (0.07, 0.8, (0.72, 0.25, 0.03)),
    "music": (0.12, -0.1, (0.78, 0.07, 0.15)),
    "education": (0.07, -0.8, (0.80, 0.17, 0.03)),
    "pets": (0.09, -0.9, (0.72, 0.27, 0.01)),
    "finance": (0.06, 0.3, (0.75, 0.20, 0.05)),
}
CATEGORY_NAMES: tuple[str, ...] = tuple(CATEGORIES)
# Categories where low-quality items are more often misleading than merely low-effort.
MISLEADING_PRONE = ("news", "finance", "education", "beauty")

# Hour-of-day activity (local time), 0..23: quiet at night, a peak in the evening.
DAILY_RHYTHM: tuple[float, ...] = (
    0.55, 0.35, 0.22, 0.15, 0.12, 0.14, 0.25, 0.42, 0.55, 0.62, 0.66, 0.70,
    0.78, 0.76, 0.72, 0.74, 0.80, 0.90, 1.00, 1.10, 1.20, 1.22, 1.08, 0.82,
)  # fmt: skip

GENERAL_TAGS: tuple[str, ...] = ("fyp", "foryou", "viral", "trending", "explore", "foryoupage")
CATEGORY_TAGS: dict[str, tuple[str, ...]] = {
    "gaming": (
        "gaming",
        "gamer",
        "minecraft",
        "fortnite",
        "valorant",
        "speedrun",
        "esports",
        "gameplay",
    ),
    "beauty": ("makeup", "skincare", "beauty", "grwm", "nails", "hairstyle", "glowup", "tutorial"),
    "comedy": ("funny", "comedy", "prank", "meme", "lol", "skit", "relatable", "humor"),
    "food": ("food", "recipe", "cooking", "foodie", "baking", "streetfood", "asmr", "dinner"),
    "sports": ("football", "soccer", "nba", "gym", "workout", "fitness", "cricket", "highlights"),
    "news": (
        "news",
        "breaking",
        "politics",
        "worldnews",
        "update",
        "election",
        "headlines",
        "facts",
    ),
    "music": ("music", "cover", "singing", "dance", "newmusic", "guitar", "rap", "kpop"),
    "education": (
        "learn",
        "science",
        "history",
        "studytok",
        "math",
        "facts",
        "didyouknow",
        "edutok",
    ),
    "pets": ("dog", "cat", "pets", "puppy", "kitten", "cute", "dogsoftiktok", "catsoftiktok"),
    "finance": (
        "money",
        "investing",
        "stocks",
        "crypto",
        "budget",
        "finance",
        "sidehustle",
        "wealth",
    ),
}
# Popular cross-category tags; "lifehack" sits mid-table so a campaign hijacking it is visible.
TOPIC_TAGS: tuple[str, ...] = (
    "duet", "challenge", "motivation", "aesthetic", "vlog", "lifehack", "dayinmylife", "storytime",
    "tips", "diy", "travel", "love", "summer", "weekend", "satisfying", "pov", "transition",
    "behindthescenes", "throwback", "fyp2026", "tutorialtuesday", "collab", "newyear", "family",
    "friends", "goals", "mood", "vibes", "art", "photography", "nature", "city", "night",
)  # fmt: skip
SPAM_TAGS: tuple[str, ...] = (
    "giveaway", "freemoney", "followback", "linkinbio", "earnmoney", "dm4promo", "free",
    "cashapp", "win", "promo",
)  # fmt: skip

URLS: tuple[str, ...] = (
    "http://bit.ly/fr33-g1ft",
    "https://free-coins.win",
    "http://claim-now.xyz/p",
    "https://t.ly/earn-daily",
    "http://promo-drop.top",
)
EMOJIS: tuple[str, ...] = ("🔥", "😂", "❤️", "✨", "🙌", "😍", "💯", "👀", "🎉", "😭")
SPAM_EMOJIS: tuple[str, ...] = ("💰💰💰", "🤑🤑", "🎁🎁🎁", "🔥🔥🔥🔥", "‼️‼️", "💸💸💸")

CAPTION_OPENERS: tuple[str, ...] = (
    "you have to try this",
    "day 12 of",
    "finally",
    "my take on",
    "can't believe",
    "part 2 of",
    "quick",
    "honest review:",
    "when your friend asks about",
    "POV:",
    "trying",
    "the best",
)
CATEGORY_TOPICS: dict[str, tuple[str, ...]] = {
    "gaming": ("this clutch round", "a new speedrun route", "the hardest boss", "ranked grind"),
    "beauty": ("my everyday makeup", "a 5 step skincare routine", "summer nails", "this glow"),
    "comedy": ("my mom's reaction", "office life", "that one friend", "group chats"),
    "food": ("15 minute pasta", "street tacos", "grandma's soup", "the crispiest fries"),
    "sports": ("leg day", "that last-minute goal", "my first marathon", "free throw practice"),
    "news": ("today's headlines", "what changed this week", "the city council vote", "the storm"),
    "music": ("an acoustic cover", "this new beat", "a duet with my sister", "the chorus"),
    "education": ("how volcanoes work", "a math trick", "ancient Rome", "why the sky is blue"),
    "pets": ("my dog learning a trick", "a sleepy kitten", "bath time", "the zoomies"),
    "finance": ("my monthly budget", "index funds", "saving for a trip", "rent vs buy"),
}
CAPTION_CLOSERS: tuple[str, ...] = (
    "",
    "what do you think?",
    "follow for more",
    "link to full video in comments",
    "thoughts?",
    "wait for it",
    "tag a friend",
    "lol",
)
SPAM_OPENERS: tuple[str, ...] = (
    "FREE",
    "WIN A FREE",
    "CLAIM YOUR FREE",
    "GET FREE",
    "LAST CHANCE FREE",
)
SPAM_THINGS: tuple[str, ...] = ("IPHONE", "GIFT CARD", "COINS", "$500", "FOLLOWERS", "CRYPTO")
SPAM_CTAS: tuple[str, ...] = (
    "click the link",
    "DM me now",
    "link in bio",
    "only today",
    "100% real no scam",
)
MISLEADING_HOOKS: tuple[str, ...] = (
    "doctors don't want you to know",
    "this ONE trick",
    "the truth they are hiding about",
    "you won't believe",
    "BANNED video:",
    "scientists are shocked by",
)
LOW_EFFORT_CAPTIONS: tuple[str, ...] = (".", "lol", "idk", "repost", "part 1", "...", "ok", "😂")

CLEAN_COMMENTS: tuple[str, ...] = (
    "love this",
    "so good",
    "this made my day",
    "where is this from",
    "need part 2",
    "haha same",
    "great video",
    "first",
    "underrated",
    "can you do a tutorial",
    "wow",
    "this is so cute",
    "facts",
    "i tried this and it worked",
    "the ending though",
    "who else is watching in 2026",
    "not me watching this 5 times",
    "so relatable",
    "thanks for sharing",
    "what song is this",
)
# Abusive comments: each contains at least one word of features.schema.ABUSE_LEXICON (tested).
TOXIC_COMMENTS: tuple[str, ...] = (
    "you are an idiot",
    "stupid video",
    "what a loser",
    "so ugly lol",
    "this is trash",
    "go die",
    "i hate you",
    "pathetic",
    "disgusting people",
    "absolute moron",
    "you are scum",
    "nobody likes you loser",
    "kill yourself",
    "delete this trash idiot",
    "ugly and stupid",
)
SPAM_COMMENTS: tuple[str, ...] = (
    "check my profile for free coins",
    "dm me for promo",
    "follow back",
    "free gift card link in bio",
)

MODERATION_POLICIES: tuple[str, ...] = (
    "spam",
    "misinformation",
    "harassment",
    "hate_speech",
    "adult_content",
    "violence",
)


@dataclass(frozen=True)
class TextBanks:
    """The spam and abuse vocabulary of one world: what spam captions, spam tags and abusive or
    spammy comments are made of. The default world uses the module constants above; a drawn
    world (simulator.worlds) picks its own subsets of the larger pools below, so a text model
    fitted to one world's words is not handed the next world's words for free.
    """

    spam_tags: tuple[str, ...] = SPAM_TAGS
    spam_openers: tuple[str, ...] = SPAM_OPENERS
    spam_things: tuple[str, ...] = SPAM_THINGS
    spam_ctas: tuple[str, ...] = SPAM_CTAS
    urls: tuple[str, ...] = URLS
    misleading_hooks: tuple[str, ...] = MISLEADING_HOOKS
    toxic_comments: tuple[str, ...] = TOXIC_COMMENTS
    spam_comments: tuple[str, ...] = SPAM_COMMENTS
    # The three calls to action a spam campaign's script varies between.
    campaign_ctas: tuple[str, ...] = ("click the link", "link in bio", "DM me now")

    def __post_init__(self) -> None:
        for name, bank in self.to_dict().items():
            if len(bank) < (3 if name == "campaign_ctas" else 2) or not all(
                isinstance(s, str) and s for s in bank
            ):
                raise ValueError(
                    f"text bank {name} needs at least 2 non-empty strings, got {bank!r}"
                )

    @property
    def comment_texts(self) -> tuple[str, ...]:
        """Every comment text, in the code order of the events table's `text` column."""
        return CLEAN_COMMENTS + self.toxic_comments + self.spam_comments

    def to_dict(self) -> dict[str, list[str]]:
        return {name: list(getattr(self, name)) for name in self.__dataclass_fields__}


DEFAULT_BANKS = TextBanks()

# Larger pools a drawn world samples its banks from (each includes the default bank, so a
# world may share some words with the default one, as real platforms share some spam).
SPAM_TAG_POOL: tuple[str, ...] = (
    *SPAM_TAGS,
    "freegift", "giveawayalert", "dmme", "makemoneyonline", "passiveincome", "crypto4all",
    "freefollowers", "f4f", "l4l", "sub4sub", "bonus", "claimnow", "airdrop", "luckywinner",
    "quickcash", "richlife", "bitcoinfree", "promocode", "getpaid", "moneytok",
)  # fmt: skip
SPAM_OPENER_POOL: tuple[str, ...] = (
    *SPAM_OPENERS,
    "GRAB YOUR", "UNLOCK", "EXCLUSIVE", "WIN", "FREE FREE FREE", "GET A", "CONGRATS YOU WON",
    "ONLY 10 LEFT:", "SECRET METHOD FOR", "HUGE DROP:",
)  # fmt: skip
SPAM_THING_POOL: tuple[str, ...] = (
    *SPAM_THINGS,
    "PS5", "AIRPODS", "$1000", "BITCOIN", "VBUCKS", "ROBUX", "LIKES", "TOKENS", "CASH PRIZE",
    "AMAZON VOUCHER", "NFT", "MYSTERY BOX",
)  # fmt: skip
SPAM_CTA_POOL: tuple[str, ...] = (
    *SPAM_CTAS,
    "tap my profile", "message me", "hurry up", "comment DONE", "check bio now",
    "limited spots", "act fast", "no catch", "verified legit", "dont miss out",
)  # fmt: skip
URL_POOL: tuple[str, ...] = (
    *URLS,
    "http://gift-4u.click",
    "https://earn-fast.site/x",
    "http://rb.gy/c0ins",
    "https://win-prize.online",
    "http://cutt.ly/fr33",
    "https://claim-bonus.icu",
    "http://tinyurl.com/g1ftz",
    "https://crypto-drop.live",
    "http://free-likes.shop",
    "https://payout-now.top",
)
MISLEADING_HOOK_POOL: tuple[str, ...] = (
    *MISLEADING_HOOKS,
    "what they never told you about",
    "SHOCKING:",
    "this will change everything about",
    "experts hate this:",
    "100% proof of",
    "the real reason behind",
    "they deleted this about",
    "nobody talks about",
)
TOXIC_COMMENT_POOL: tuple[str, ...] = (
    *TOXIC_COMMENTS,
    "nobody asked",
    "touch grass",
    "clown behaviour",
    "get off the internet",
    "you should be ashamed",
    "worst creator ever",
    "cringe go away",
    "what a waste of space",
    "i will find you",
    "everyone laughs at you",
    "dumb as a rock",
    "you look like a potato",
    "unfollow this freak",
    "shut up already",
    "you deserve every hate comment",
    "report this clown",
    "imagine being this dumb",
    "crawl back under your rock",
    "worthless content worthless person",
    "go cry somewhere else",
)
SPAM_COMMENT_POOL: tuple[str, ...] = (
    *SPAM_COMMENTS,
    "i made 500 a day check my bio",
    "who wants free followers dm",
    "sub to my channel pls",
    "earn crypto link in profile",
    "nice video check my page",
    "giveaway on my page now",
    "text me on telegram",
    "free coins at my profile",
)
