"""Reply text of the demo model: plausible, varied and deterministic (pure functions).

`compose_reply(messages)` looks at the last user message, guesses what kind of answer fits
(greeting, thanks, code, list, question, statement), pulls a short topic phrase out of it and fills
templates chosen by a random generator seeded from the whole conversation, so identical requests
give identical text. `split_tokens` cuts text into word-ish tokens with their leading whitespace.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence

from ._base import ChatMessage

_TOKEN_RE = re.compile(r"\s*(?:[\w']+|[^\w\s]+)")
_WORD_RE = re.compile(r"[A-Za-z0-9][\w'+#.-]*")

# Words stripped from the start of a prompt to find its topic ("How do I learn Rust?" -> "Rust").
_LEADING_FILLER = frozenset(
    "please can could would will you i me us we tell explain describe show give write create make help "
    "what what's whats is are was how do does did to why who the a an about some hey hi hello so ok okay "
    "want need like i'd let's lets quick short simple brief get use learn understand know find build "
    "implement generate there any my our your this that of in".split()
)
_LIST_WORDS = frozenset("list steps ways tips ideas examples options reasons pros cons checklist".split())
# "Give me some tips for sleeping better" -> "sleeping better": list nouns are not the topic either.
_TOPIC_PREFIX = _LEADING_FILLER | _LIST_WORDS | frozenset({"for", "on", "about", "to"})
# Words that end a topic phrase: what follows is a clause, not the topic itself.
_TOPIC_STOP = frozenset("that which so because if when for to like with using please and or but".split())
_TRAILING_STOP = frozenset("the a an of in on at for to and with my your our".split())
_CODE_WORDS = frozenset(
    "code function script program snippet regex class method implement implementation algorithm sql "
    "query def".split()
)
_LANGUAGES: dict[str, str] = {
    "python": "python",
    "py": "python",
    "javascript": "javascript",
    "js": "javascript",
    "node": "javascript",
    "typescript": "typescript",
    "ts": "typescript",
    "bash": "bash",
    "shell": "bash",
    "sql": "sql",
    "rust": "rust",
    "go": "go",
    "golang": "go",
}
# With a language name, these make a request for code ("show me an example in Go").
_CODE_VERBS = frozenset("write show example implement snippet sample".split())
_QUESTION_STARTS = (
    "what",
    "why",
    "who",
    "when",
    "where",
    "which",
    "how",
    "can",
    "could",
    "would",
    "is ",
    "are ",
    "do ",
    "does ",
    "explain",
    "tell",
    "describe",
)
_LANGUAGE_NAMES = {"javascript": "JavaScript", "typescript": "TypeScript", "sql": "SQL"}
# Words never used to name the function in a code answer.
_NOT_IDENTIFIER = _LEADING_FILLER | _TOPIC_STOP | _CODE_WORDS | _TRAILING_STOP | frozenset(_LANGUAGES)

_GREETINGS = (
    "Hello! I'm the demo model of this chat app. Ask me anything: I can explain a topic, "
    "sketch a list of ideas, or write a small code example.",
    "Hi there! This is a simulated assistant, so my answers are made up, but they stream just like "
    "a real model's. What would you like to talk about?",
    "Hey! Good to see you. Try asking for a list of tips or a short Python function to see "
    "how Markdown renders while it streams.",
)
_THANKS = (
    "You're welcome! Let me know if there is anything else you'd like to explore.",
    "Glad I could help. Feel free to ask a follow-up question any time.",
)
_OPENERS = (
    "Good question about **{topic}**.",
    "Let's talk about **{topic}**.",
    "Here's a short overview of **{topic}**.",
    "Sure, I can help with **{topic}**.",
    "**{topic}** is a great thing to dig into.",
)
_BODY = (
    "The key idea is to start from the basics and build up one step at a time.",
    "Most people find it easier once they see a concrete example.",
    "There are a few trade-offs, and the right choice depends on what you need most.",
    "A common mistake is trying to do everything at once instead of iterating.",
    "It helps to measure first, so you know which part actually matters.",
    "Keep it simple at first; you can always add detail later.",
    "In practice, the details vary, but the underlying principles stay the same.",
    "Experts usually recommend checking your assumptions before going further.",
)
_LIST_INTROS = (
    "Here are a few points to consider:",
    "A simple plan could look like this:",
    "Some ideas to get you started:",
)
_LIST_ITEMS = (
    "**Start small**: pick one part of {topic} and get it working.",
    "**Read the docs**: the official guide usually answers the first questions.",
    "**Practice regularly**: short, frequent sessions beat one long one.",
    "**Ask for feedback** from someone who has done it before.",
    "**Write things down** so you can see your progress.",
    "**Compare alternatives** before committing to one approach.",
    "**Automate the boring parts** once you understand them.",
)
_CLOSERS = (
    "Would you like me to go into more detail?",
    "Let me know if you want a concrete example.",
    "Does that help? I'm happy to expand on any part.",
    "(This is the demo model, so take the specifics with a grain of salt.)",
)
_STATEMENT_OPENERS = (
    "Interesting point about **{topic}**.",
    "Thanks for sharing that.",
    "That makes sense.",
    "I see what you mean about **{topic}**.",
)
_CODE_INTROS = (
    "Here's a small {lang} example for **{topic}**:",
    "Sure! A minimal {lang} version:",
    "This {lang} snippet is a good starting point:",
)
_CODE_OUTROS = (
    "You can adapt the names and add error handling as needed.",
    "Run it and tweak the input to see how it behaves.",
    "Let me know if you'd like tests for it as well.",
)
_SNIPPETS: dict[str, str] = {
    "python": 'def {name}(items: list[int]) -> list[int]:\n    """Return the items, sorted."""\n'
    "    return sorted(items)\n\n\nprint({name}([3, 1, 2]))",
    "javascript": "function {camel}(items) {{\n  return [...items].sort((a, b) => a - b);\n}}\n\n"
    "console.log({camel}([3, 1, 2]));",
    "typescript": "export function {camel}(items: number[]): number[] {{\n"
    "  return [...items].sort((a, b) => a - b);\n}}",
    "bash": '#!/usr/bin/env bash\nset -euo pipefail\n\n{name}() {{\n  sort -n "$1"\n}}\n\n{name} input.txt',
    "sql": "SELECT id, name, created_at\nFROM {name}\nWHERE created_at > now() - interval '7 days'\n"
    "ORDER BY created_at DESC;",
    "rust": "fn {name}(mut items: Vec<i32>) -> Vec<i32> {{\n    items.sort();\n    items\n}}",
    "go": "func {camel}(items []int) []int {{\n\tsort.Ints(items)\n\treturn items\n}}",
}


def split_tokens(text: str) -> list[str]:
    """Word-ish tokens with their leading whitespace; `"".join(tokens) == text.rstrip()`."""
    return _TOKEN_RE.findall(text)


def count_tokens(messages: Sequence[ChatMessage]) -> int:
    """A rough input-token count (the demo's tokenizer over every message)."""
    return sum(len(split_tokens(m.content)) for m in messages)


def conversation_seed(messages: Sequence[ChatMessage]) -> int:
    """A stable seed (not `hash()`, which is salted per process) for the whole conversation."""
    digest = hashlib.blake2b(digest_size=8)
    for m in messages:
        digest.update(m.role.encode())
        digest.update(b"\0")
        digest.update(m.content.encode("utf-8", "surrogatepass"))
        digest.update(b"\1")
    return int.from_bytes(digest.digest(), "big")


def extract_topic(prompt: str) -> str:
    """A short topic phrase from the prompt ("How do I learn Rust?" -> "Rust")."""
    words = _WORD_RE.findall(prompt.split("?")[0].split(".")[0].split("!")[0])
    while words and words[0].lower() in _TOPIC_PREFIX:
        words.pop(0)
    topic: list[str] = []
    for word in words:
        if word.lower() in _TOPIC_STOP or len(topic) == 4:
            break
        topic.append(word)
    while topic and topic[-1].lower() in _TRAILING_STOP:
        topic.pop()
    return " ".join(topic) or "that"


def compose_reply(messages: Sequence[ChatMessage]) -> str:
    """The demo model's whole answer to the conversation (Markdown)."""
    rng = random.Random(conversation_seed(messages))
    prompt = next((m.content for m in reversed(messages) if m.role == "user"), "").strip()
    words = {w.lower().strip(".'") for w in _WORD_RE.findall(prompt)}
    topic = extract_topic(prompt)
    if not prompt:
        return "It looks like your message was empty. What would you like to talk about?"
    if len(words) <= 4 and words & {"hi", "hello", "hey", "morning", "evening", "yo"}:
        return rng.choice(_GREETINGS)
    if len(words) <= 6 and words & {"thanks", "thank", "thx", "cheers"}:
        return rng.choice(_THANKS)
    if words & _CODE_WORDS or (words & _LANGUAGES.keys() and words & _CODE_VERBS):
        return _code_reply(rng, prompt, topic)
    if words & _LIST_WORDS or prompt.lower().startswith(("how to", "how do", "how can", "how should")):
        return _list_reply(rng, topic)
    if prompt.endswith("?") or prompt.lower().startswith(_QUESTION_STARTS):
        return _answer_reply(rng, topic)
    return _statement_reply(rng, topic)


def _capitalize(sentence: str) -> str:
    """Upper-case the first letter (topics are lifted from mid-sentence: "**capital of France**...")."""
    for i, char in enumerate(sentence):
        if char.isalpha():
            return sentence[:i] + char.upper() + sentence[i + 1 :]
    return sentence


def _sentences(rng: random.Random, pool: Sequence[str], k: int) -> str:
    return " ".join(rng.sample(list(pool), k))


def _answer_reply(rng: random.Random, topic: str) -> str:
    opener = _capitalize(rng.choice(_OPENERS).format(topic=topic))
    return f"{opener} {_sentences(rng, _BODY, rng.randint(2, 3))}\n\n{rng.choice(_CLOSERS)}"


def _list_reply(rng: random.Random, topic: str) -> str:
    items = rng.sample(list(_LIST_ITEMS), rng.randint(3, 4))
    bullets = "\n".join(f"{i}. {item.format(topic=topic)}" for i, item in enumerate(items, 1))
    opener = _capitalize(rng.choice(_OPENERS).format(topic=topic))
    return f"{opener} {rng.choice(_LIST_INTROS)}\n\n{bullets}\n\n{rng.choice(_CLOSERS)}"


def _statement_reply(rng: random.Random, topic: str) -> str:
    opener = rng.choice(_STATEMENT_OPENERS).format(topic=topic)
    return f"{opener} {_sentences(rng, _BODY, 2)} {rng.choice(_CLOSERS)}"


def _code_reply(rng: random.Random, prompt: str, topic: str) -> str:
    lang = next((_LANGUAGES[w] for w in _WORD_RE.findall(prompt.lower()) if w in _LANGUAGES), "python")
    content = [w.lower() for w in re.findall(r"[A-Za-z]+", prompt) if w.lower() not in _NOT_IDENTIFIER][
        :3
    ] or ["solve"]
    name = "_".join(content)
    camel = content[0] + "".join(w.title() for w in content[1:])
    code = _SNIPPETS[lang].format(name=name, camel=camel)
    intro = rng.choice(_CODE_INTROS).format(lang=_LANGUAGE_NAMES.get(lang, lang.title()), topic=topic)
    return f"{intro}\n\n```{lang}\n{code}\n```\n\n{rng.choice(_CODE_OUTROS)}"


# Said first in every demo reply (when the provider's `note` is on), so nobody mistakes it for a model.
DEMO_NOTE = (
    "*This is chatapp's built-in **demo model**: simulated text, no real model. To chat with one, start "
    "the server with a provider configured, for example `DEFAULT_PROVIDER=openai OPENAI_API_KEY=sk-... "
    'make run` (README, "Providers").*'
)
_MORE_HEADINGS = ("More detail", "Going further", "In practice", "A closer look", "Next steps")


def demo_reply(messages: Sequence[ChatMessage], *, min_tokens: int = 0, note: bool = False) -> str:
    """`compose_reply`, led by DEMO_NOTE when `note`, and padded with paragraphs until it is at least
    `min_tokens` tokens long: long enough to press Stop or reload mid-stream."""
    parts = [DEMO_NOTE, compose_reply(messages)] if note else [compose_reply(messages)]
    rng = random.Random(conversation_seed(messages) + 1)
    length = sum(len(split_tokens(p)) for p in parts)
    while length < min_tokens:
        heading = f"### {rng.choice(_MORE_HEADINGS)}"
        body = _sentences(rng, _BODY, 3)
        bullets = "\n".join(f"- {item.format(topic='it')}" for item in rng.sample(list(_LIST_ITEMS), 2))
        parts.append(f"{heading}\n\n{body}\n\n{bullets}")
        length += len(split_tokens(parts[-1]))
    return "\n\n".join(parts)
